/**
 * The fault modules, in catalogue order. Each folder holds a fault's spec and its
 * whole behaviour.
 */
import { kb903927 } from './kb903927';
import { kb297040 } from './kb297040';
import { kb898060 } from './kb898060';
import { kb972183 } from './kb972183';
import { kb319381 } from './kb319381';

export const FAULT_MODULES = [kb903927, kb297040, kb898060, kb972183, kb319381] as const;

export type FaultModules = (typeof FAULT_MODULES)[number];
/** What each module's install() returns, by fault id. */
export type InstalledById = { [M in FaultModules as M['spec']['id']]: ReturnType<M['install']> };
