/**
 * The control commands for impairments (newline JSON, stack/control/protocol.ts), kept
 * here so that the CLI can name them without loading the stack.
 *
 *   impair.add    args { words: string[] }  -> ImpairmentRow (error EUSAGE: one line, the bad word)
 *   impair.list   args {}                   -> { impairments: ImpairmentRow[] }
 *   impair.del    args { id: number }       -> ImpairmentRow
 *   impair.clear  args {}                   -> { removed: ImpairmentRow[] }
 */
export const ImpairCommand = {
  ADD: 'impair.add',
  LIST: 'impair.list',
  DEL: 'impair.del',
  CLEAR: 'impair.clear',
} as const;
