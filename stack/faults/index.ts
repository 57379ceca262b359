/**
 * The fault modules, in catalogue order. Each folder holds a fault's spec and its
 * whole behaviour; kb972183 holds its catalogue entry only until its behaviour lands
 * (with stack/nlb): installing it changes nothing.
 */
import type { FaultContext, FaultModule, FaultSpec, InstalledFault } from './module';
import { kb903927 } from './kb903927';
import { kb297040 } from './kb297040';
import { kb898060 } from './kb898060';
import { spec as kb972183Spec } from './kb972183/spec';
import { kb319381 } from './kb319381';

/** A fault that is catalogued and not implemented: no hook, no behaviour. */
function cataloguedOnly<S extends FaultSpec>(spec: S) {
  return { spec, install: (_ctx: FaultContext): InstalledFault => ({ uninstall() {} }) } as const satisfies FaultModule;
}

export const FAULT_MODULES = [kb903927, kb297040, kb898060, cataloguedOnly(kb972183Spec), kb319381] as const;

export type FaultModules = (typeof FAULT_MODULES)[number];
/** What each module's install() returns, by fault id. */
export type InstalledById = { [M in FaultModules as M['spec']['id']]: ReturnType<M['install']> };
