/**
 * Pretraining checkpoints: the trainer's whole state (weights, AdamW moments, best weights, position
 * in the data) as safetensors plus a JSON record, written atomically so a crash mid-write leaves the
 * previous checkpoint intact.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { HostTensor } from '../graph/types.js';
import { readSafetensors, writeFileAtomic, writeSafetensors } from '../model/safetensors.js';
import type { TrainerState } from '../train/trainer.js';

const f32 = (a: Float32Array): HostTensor => ({ dtype: 'float32', dims: [a.length], data: a });

export function saveTrainerState(dir: string, s: TrainerState, extra: Record<string, unknown> = {}): void {
  const tmp = `${dir}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  const tensors = new Map<string, HostTensor>();
  for (const [k, v] of s.params) tensors.set(`param/${k}`, f32(v));
  for (const [k, v] of s.optimizer.m) tensors.set(`m/${k}`, f32(v));
  for (const [k, v] of s.optimizer.v) tensors.set(`v/${k}`, f32(v));
  if (s.best) for (const [k, v] of s.best.params) tensors.set(`best/${k}`, f32(v));
  writeSafetensors(join(tmp, 'state.safetensors'), tensors);
  const meta = {
    step: s.step,
    epoch: s.epoch,
    batchInEpoch: s.batchInEpoch,
    t: s.optimizer.t,
    best: s.best ? { valLoss: s.best.valLoss, step: s.best.step } : null,
    evalsWithoutImprovement: s.evalsWithoutImprovement,
    history: s.history,
    extra,
  };
  writeFileAtomic(join(tmp, 'state.json'), new TextEncoder().encode(JSON.stringify(meta)));
  rmSync(dir, { recursive: true, force: true });
  renameSync(tmp, dir);
}

export function loadTrainerState(dir: string): { state: TrainerState; extra: Record<string, unknown> } | null {
  if (!existsSync(join(dir, 'state.json'))) return null;
  const meta = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8'));
  const file = readSafetensors(join(dir, 'state.safetensors'));
  const group = (prefix: string): Map<string, Float32Array> => {
    const out = new Map<string, Float32Array>();
    for (const [k, t] of file.tensors) if (k.startsWith(prefix)) out.set(k.slice(prefix.length), (t.data as Float32Array).slice());
    return out;
  };
  const best = meta.best ? { valLoss: meta.best.valLoss, step: meta.best.step, params: group('best/') } : null;
  return {
    state: {
      step: meta.step,
      epoch: meta.epoch,
      batchInEpoch: meta.batchInEpoch,
      params: group('param/'),
      optimizer: { t: meta.t, m: group('m/'), v: group('v/') },
      best,
      evalsWithoutImprovement: meta.evalsWithoutImprovement,
      history: meta.history,
    },
    extra: meta.extra ?? {},
  };
}
