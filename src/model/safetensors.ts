/**
 * The safetensors format, read and written by our own code: an 8-byte little-endian header length,
 * a JSON header (name -> dtype, shape, [begin, end) byte offsets into the data; optional
 * `__metadata__` of strings), then the raw little-endian tensor bytes.
 *
 * Reading converts F16 and BF16 to float32 (our graphs are float32); files are read tensor by tensor
 * into their own arrays, so multi-gigabyte shards never pass through one Buffer. Writing is
 * deterministic (tensors ordered by alignment then name, header padded to 8 bytes, no holes, so every
 * tensor is naturally aligned) and atomic (temp file, fsync, rename, fsync of the directory): adapter
 * files use it too, and a crash must never leave half a file under the final name.
 */
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, readSync, renameSync, rmSync, writeSync, fstatSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { type AnyTypedArray, type DType, type HostTensor, elementCount } from '../graph/types.js';

export class SafetensorsError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'SafetensorsError';
  }
}

/** Element types on disk. */
export type StDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'U8' | 'BOOL';

const ITEM_BYTES: Record<StDType, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, U8: 1, BOOL: 1 };
/** What each disk type becomes in memory. */
const HOST_DTYPE: Record<StDType, DType> = { F64: 'float64', F32: 'float32', F16: 'float32', BF16: 'float32', I64: 'int64', I32: 'int32', U8: 'uint8', BOOL: 'bool' };
const DISK_DTYPE: Record<DType, StDType> = { float64: 'F64', float32: 'F32', int64: 'I64', int32: 'I32', uint8: 'U8', bool: 'BOOL' };

export interface TensorInfo {
  dtype: StDType;
  shape: number[];
  /** Absolute byte offsets [begin, end) relative to the start of the data section. */
  offsets: [number, number];
}

export interface SafetensorsHeader {
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
  /** Byte position of the data section in the file (8 + header length). */
  dataStart: number;
}

export interface SafetensorsFile {
  tensors: Map<string, HostTensor>;
  metadata: Record<string, string>;
}

const MAX_HEADER = 100 * 1024 * 1024;

function parseHeader(json: string, dataBytes: number, where: string): Omit<SafetensorsHeader, 'dataStart'> {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (e) {
    throw new SafetensorsError('bad_safetensors', `${where}: header is not JSON (${(e as Error).message})`, { where });
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new SafetensorsError('bad_safetensors', `${where}: header is not an object`, { where });
  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(raw as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (!v || typeof v !== 'object' || Object.values(v).some((x) => typeof x !== 'string')) {
        throw new SafetensorsError('bad_safetensors', `${where}: __metadata__ must map strings to strings`, { where });
      }
      metadata = { ...(v as Record<string, string>) };
      continue;
    }
    const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const dtype = e?.dtype as StDType;
    if (typeof dtype !== 'string' || !(dtype in ITEM_BYTES)) {
      throw new SafetensorsError('unsupported_dtype', `${where}: tensor "${name}" has dtype ${JSON.stringify(e?.dtype)} (supported: ${Object.keys(ITEM_BYTES).join(', ')})`, { name, dtype: e?.dtype });
    }
    const shape = e.shape;
    const offs = e.data_offsets;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new SafetensorsError('bad_safetensors', `${where}: tensor "${name}" has a bad shape ${JSON.stringify(shape)}`, { name, shape });
    }
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((d) => Number.isInteger(d) && d >= 0) || offs[1] < offs[0]) {
      throw new SafetensorsError('bad_safetensors', `${where}: tensor "${name}" has bad data_offsets ${JSON.stringify(offs)}`, { name, offs });
    }
    const bytes = elementCount(shape) * ITEM_BYTES[dtype];
    if (offs[1] - offs[0] !== bytes) {
      throw new SafetensorsError('bad_safetensors', `${where}: tensor "${name}" spans ${offs[1] - offs[0]} bytes, ${dtype}[${shape}] needs ${bytes}`, { name, offs, shape });
    }
    if (offs[1] > dataBytes) {
      throw new SafetensorsError('truncated', `${where}: tensor "${name}" ends at byte ${offs[1]} of a ${dataBytes}-byte data section`, { name, end: offs[1], dataBytes });
    }
    tensors.set(name, { dtype, shape: [...shape], offsets: [offs[0], offs[1]] });
  }
  return { tensors, metadata };
}

function headerLength(prefix: Uint8Array, total: number, where: string): number {
  if (total < 8) throw new SafetensorsError('truncated', `${where}: ${total} bytes, too short for a safetensors file`, { where, bytes: total });
  const n = Number(new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true));
  if (n > MAX_HEADER || 8 + n > total) {
    throw new SafetensorsError('truncated', `${where}: header length ${n} does not fit in ${total} bytes`, { where, headerLength: n, bytes: total });
  }
  return n;
}

/** f16 bits -> float32 (subnormals, infinities and NaN included). */
function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Converts raw little-endian bytes of one tensor into its host array. */
function toHost(info: TensorInfo, bytes: Uint8Array): AnyTypedArray {
  const n = elementCount(info.shape);
  const aligned = <T>(ctor: { new (b: ArrayBuffer, o: number, n: number): T; BYTES_PER_ELEMENT: number }, from: Uint8Array): T =>
    from.byteOffset % ctor.BYTES_PER_ELEMENT === 0
      ? new ctor(from.buffer as ArrayBuffer, from.byteOffset, n)
      : new ctor(from.slice().buffer as ArrayBuffer, 0, n);
  switch (info.dtype) {
    case 'F32':
      return aligned(Float32Array, bytes);
    case 'F64':
      return aligned(Float64Array, bytes);
    case 'I64':
      return aligned(BigInt64Array, bytes);
    case 'I32':
      return aligned(Int32Array, bytes);
    case 'U8':
    case 'BOOL':
      return bytes;
    case 'F16': {
      const src = aligned(Uint16Array, bytes);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = halfToFloat(src[i]);
      return out;
    }
    case 'BF16': {
      // bf16 is the top half of a float32.
      const src = aligned(Uint16Array, bytes);
      const out = new Float32Array(n);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = src[i] << 16;
      return out;
    }
  }
}

/** Decode a whole safetensors file held in memory. Float32/int arrays may view `buf` (no copy). */
export function decodeSafetensors(buf: Uint8Array, where = 'safetensors buffer'): SafetensorsFile {
  const { tensors, metadata, dataStart } = decodeSafetensorsHeader(buf, where);
  const out = new Map<string, HostTensor>();
  for (const [name, info] of tensors) {
    const bytes = buf.subarray(dataStart + info.offsets[0], dataStart + info.offsets[1]);
    out.set(name, { dtype: HOST_DTYPE[info.dtype], dims: [...info.shape], data: toHost(info, bytes) });
  }
  return { tensors: out, metadata };
}

/** The header of a whole file held in memory (names, dtypes, shapes, offsets checked, metadata), no tensor read or converted. */
export function decodeSafetensorsHeader(buf: Uint8Array, where = 'safetensors buffer'): SafetensorsHeader {
  const n = headerLength(buf, buf.byteLength, where);
  return { ...parseHeader(new TextDecoder().decode(buf.subarray(8, 8 + n)), buf.byteLength - 8 - n, where), dataStart: 8 + n };
}

/** Read only the header of a file (names, dtypes, shapes): validation before loading gigabytes. */
export function readSafetensorsHeader(path: string): SafetensorsHeader {
  const fd = openFile(path);
  try {
    return readHeaderFd(fd, path);
  } finally {
    closeSync(fd);
  }
}

function openFile(path: string): number {
  try {
    return openSync(path, 'r');
  } catch (e) {
    throw new SafetensorsError('file_not_found', `cannot open ${path}: ${(e as Error).message}`, { path });
  }
}

function readHeaderFd(fd: number, path: string): SafetensorsHeader {
  const total = fstatSync(fd).size;
  const prefix = new Uint8Array(8);
  readSync(fd, prefix, 0, Math.min(8, total), 0);
  const n = headerLength(prefix, total, path);
  const hb = new Uint8Array(n);
  readSync(fd, hb, 0, n, 8);
  return { ...parseHeader(new TextDecoder().decode(hb), total - 8 - n, path), dataStart: 8 + n };
}

/** Fill `into` from the file at `position`, all of it (a file that ends first throws `truncated`). */
export function readFully(fd: number, into: Uint8Array, position: number): void {
  let done = 0;
  while (done < into.byteLength) {
    const got = readSync(fd, into, done, into.byteLength - done, position + done);
    if (got === 0) throw new SafetensorsError('truncated', `unexpected end of file at byte ${position + done}`, { position: position + done });
    done += got;
  }
}

/**
 * Read a safetensors file. `names` limits which tensors are loaded. Each tensor gets its own array
 * (F32 and integer tensors are read straight into place; F16/BF16 are converted).
 */
export function readSafetensors(path: string, names?: (name: string) => boolean): SafetensorsFile {
  const fd = openFile(path);
  try {
    const header = readHeaderFd(fd, path);
    const out = new Map<string, HostTensor>();
    for (const [name, info] of header.tensors) {
      if (names && !names(name)) continue;
      const nbytes = info.offsets[1] - info.offsets[0];
      const bytes = new Uint8Array(nbytes); // a fresh buffer: offset 0, so typed views need no copy
      readFully(fd, bytes, header.dataStart + info.offsets[0]);
      out.set(name, { dtype: HOST_DTYPE[info.dtype], dims: [...info.shape], data: toHost(info, bytes) });
    }
    return { tensors: out, metadata: header.metadata };
  } finally {
    closeSync(fd);
  }
}

export const SAFETENSORS_INDEX = 'model.safetensors.index.json';
export const SAFETENSORS_FILE = 'model.safetensors';

/** The files of a checkpoint folder: the single file, or every shard the index names (sorted). */
export function checkpointFiles(dir: string): { files: string[]; index?: Record<string, string> } {
  const indexPath = join(dir, SAFETENSORS_INDEX);
  if (existsSync(indexPath)) {
    let index: { weight_map?: Record<string, string> };
    try {
      index = JSON.parse(readFileSync(indexPath, 'utf8')) as { weight_map?: Record<string, string> };
    } catch (e) {
      throw new SafetensorsError('bad_index', `${indexPath}: ${(e as Error).message}`, { path: indexPath });
    }
    const map = index.weight_map;
    if (!map || typeof map !== 'object' || Object.values(map).some((f) => typeof f !== 'string' || basename(f) !== f)) {
      throw new SafetensorsError('bad_index', `${indexPath}: weight_map must map tensor names to file names in the same folder`, { path: indexPath });
    }
    const files = [...new Set(Object.values(map))].sort();
    for (const f of files) {
      if (!existsSync(join(dir, f))) throw new SafetensorsError('missing_shard', `${indexPath} names shard ${f}, which is not in ${dir}`, { shard: f });
    }
    return { files: files.map((f) => join(dir, f)), index: map };
  }
  const single = join(dir, SAFETENSORS_FILE);
  if (!existsSync(single)) throw new SafetensorsError('file_not_found', `no ${SAFETENSORS_FILE} or ${SAFETENSORS_INDEX} in ${dir}`, { dir });
  return { files: [single] };
}

/** Headers of every file of a checkpoint folder, merged (a name in two shards is an error). */
export function readCheckpointHeader(dir: string): Map<string, TensorInfo & { file: string }> {
  const { files, index } = checkpointFiles(dir);
  const out = new Map<string, TensorInfo & { file: string }>();
  for (const file of files) {
    for (const [name, info] of readSafetensorsHeader(file).tensors) {
      if (out.has(name)) throw new SafetensorsError('duplicate_tensor', `tensor "${name}" is in both ${out.get(name)!.file} and ${file}`, { name });
      if (index && index[name] !== undefined && join(dir, index[name]) !== file) {
        throw new SafetensorsError('bad_index', `index puts "${name}" in ${index[name]} but it is in ${basename(file)}`, { name });
      }
      out.set(name, { ...info, file });
    }
  }
  return out;
}

/** Read every tensor of a checkpoint folder (single file or sharded). */
export function readCheckpoint(dir: string, names?: (name: string) => boolean): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const file of checkpointFiles(dir).files) {
    for (const [name, t] of readSafetensors(file, names).tensors) {
      if (out.has(name)) throw new SafetensorsError('duplicate_tensor', `tensor "${name}" appears in two shards`, { name });
      out.set(name, t);
    }
  }
  return out;
}

export type TensorMap = Map<string, HostTensor> | Record<string, HostTensor>;

/** Encode tensors (and string metadata) to safetensors bytes, deterministically. */
export function encodeSafetensors(tensors: TensorMap, metadata?: Record<string, string>): Uint8Array {
  const entries = (tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors)).map(([name, t]) => {
    if (name === '__metadata__') throw new SafetensorsError('bad_name', 'a tensor may not be called __metadata__');
    const dtype = DISK_DTYPE[t.dtype];
    if (!dtype) throw new SafetensorsError('unsupported_dtype', `tensor "${name}" has dtype ${t.dtype}`, { name, dtype: t.dtype });
    if (t.data.length !== elementCount(t.dims)) {
      throw new SafetensorsError('tensor_size', `tensor "${name}" has ${t.data.length} elements for dims [${t.dims}]`, { name, dims: t.dims });
    }
    return { name, dtype, t };
  });
  // Wider types first, then by name: with the header padded to 8 bytes every tensor lands aligned.
  entries.sort((a, b) => ITEM_BYTES[b.dtype] - ITEM_BYTES[a.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    const sorted: Record<string, string> = {};
    for (const k of Object.keys(metadata).sort()) {
      if (typeof metadata[k] !== 'string') throw new SafetensorsError('bad_metadata', `metadata "${k}" is not a string`, { key: k });
      sorted[k] = metadata[k];
    }
    header.__metadata__ = sorted;
  }
  let offset = 0;
  for (const e of entries) {
    const n = e.t.data.byteLength;
    header[e.name] = { dtype: e.dtype, shape: e.t.dims, data_offsets: [offset, offset + n] };
    offset += n;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.byteLength / 8) * 8;
  if (padded !== json.byteLength) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }
  const out = new Uint8Array(8 + json.byteLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.byteLength), true);
  out.set(json, 8);
  let at = 8 + json.byteLength;
  for (const e of entries) {
    const d = e.t.data;
    out.set(new Uint8Array(d.buffer, d.byteOffset, d.byteLength), at);
    at += d.byteLength;
  }
  return out;
}

/**
 * Write bytes atomically: temp file in the same folder, fsync, rename, fsync the folder. `bytes` may
 * come in chunks (written in order, never joined in memory); one that throws leaves `path` as it was.
 */
export function writeFileAtomic(path: string, bytes: Uint8Array | Iterable<Uint8Array>, mode = 0o644): void {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}.tmp`);
  const fd = openSync(tmp, 'w', mode);
  try {
    for (const chunk of bytes instanceof Uint8Array ? [bytes] : bytes) {
      let done = 0;
      while (done < chunk.byteLength) done += writeSync(fd, chunk, done, chunk.byteLength - done);
    }
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  closeSync(fd);
  try {
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
  try {
    const dfd = openSync(dirname(path), 'r');
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
  } catch {
    // Some filesystems refuse fsync on directories; the rename itself is still atomic.
  }
}

/** Encode and write a safetensors file atomically. */
export function writeSafetensors(path: string, tensors: TensorMap, metadata?: Record<string, string>): void {
  writeFileAtomic(path, encodeSafetensors(tensors, metadata));
}
