/** Where the emulated Windows parameters live in the registry (for the catalogue's `registry` fields). */
export const TCPIP = 'HKLM\\SYSTEM\\CurrentControlSet\\Services\\Tcpip\\Parameters';
export const TCPIP_IF = 'HKLM\\SYSTEM\\CurrentControlSet\\Services\\Tcpip\\Parameters\\Interfaces\\<adapter>';
export const WLBS = 'HKLM\\SYSTEM\\CurrentControlSet\\Services\\WLBS\\Parameters';
export const WLBS_IF = 'HKLM\\SYSTEM\\CurrentControlSet\\Services\\WLBS\\Parameters\\Interface\\<GUID>';
