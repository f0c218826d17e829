/**
 * Patterns of the JSON numbers within bounds (a schema's minimum / maximum / exclusiveMinimum /
 * exclusiveMaximum), for guided decoding to run as an NFA (regex.ts). Integers are written without
 * leading zeros, sign of zero or exponent; a bounded number is an integer in range, or one with a
 * non-zero fraction after an integer part whose every fraction is in range: fewer numbers than the
 * bounds allow, never one outside them.
 */

/** Largest bound magnitude handled (beyond it, decimal strings stop being exact integers). */
export const MAX_BOUND = 1e15;

const nines = (n: number) => '9'.repeat(n);
const zeros = (n: number) => '0'.repeat(n);

/** Decimal strings of equal length `a` <= `b` (digit by digit). */
function sameLength(a: string, b: string): string {
  if (a === b) return a;
  if (a.length === 1) return `[${a}-${b}]`;
  if (a[0] === b[0]) return a[0] + group(sameLength(a.slice(1), b.slice(1)));
  const rest = a.length - 1;
  // The whole span of the lower digits under each first digit: one class.
  if (a.slice(1) === zeros(rest) && b.slice(1) === nines(rest)) return `[${a[0]}-${b[0]}][0-9]{${rest}}`;
  const parts = [a[0] + group(sameLength(a.slice(1), nines(rest)))];
  const lo = Number(a[0]) + 1;
  const hi = Number(b[0]) - 1;
  if (lo <= hi) parts.push(`[${lo}-${hi}][0-9]{${rest}}`);
  parts.push(b[0] + group(sameLength(zeros(rest), b.slice(1))));
  return parts.join('|');
}

const group = (p: string) => (p.includes('|') ? `(${p})` : p);

/** The naturals lo..hi (0 <= lo <= hi, hi may be Infinity), as a pattern (no leading zeros). */
function naturals(lo: number, hi: number): string {
  const parts: string[] = [];
  const lengthOf = (n: number) => String(n).length;
  const top = hi === Infinity ? lengthOf(lo) : lengthOf(hi);
  for (let len = lengthOf(lo); len <= top; len++) {
    const from = Math.max(lo, len === 1 ? 0 : 10 ** (len - 1));
    const to = hi === Infinity ? 10 ** len - 1 : Math.min(hi, 10 ** len - 1);
    if (from <= to) parts.push(group(sameLength(String(from), String(to))));
  }
  // Past the bottom bound's length every longer natural is in range.
  if (hi === Infinity) parts.push(`[1-9][0-9]{${lengthOf(lo)},}`);
  return parts.join('|');
}

/** The integers lo..hi (either may be infinite), as a pattern; null when there are none. */
export function integerPattern(lo: number, hi: number): string | null {
  if (lo > hi) return null;
  const parts: string[] = [];
  // Negatives -1..lo: a minus sign before the naturals -hi..-lo.
  if (lo < 0) parts.push(`-(${naturals(Math.max(1, hi < 0 ? -hi : 1), -lo)})`);
  if (hi >= 0) parts.push(naturals(Math.max(0, lo), hi));
  return parts.length === 1 ? parts[0] : parts.map((p) => `(${p})`).join('|');
}

/**
 * The pattern of the numbers within the bounds (undefined: none on that side), integers only when
 * `integer`; null when the bounds admit no such number (or are past MAX_BOUND).
 */
export function boundedNumberPattern(b: { min?: number; max?: number; exclusiveMin?: number; exclusiveMax?: number }, integer: boolean): string | null {
  // The tightest integer bounds: a bottom integer that is in range, a top one likewise.
  const lows = [b.min !== undefined ? Math.ceil(b.min) : -Infinity, b.exclusiveMin !== undefined ? Math.floor(b.exclusiveMin) + 1 : -Infinity];
  const highs = [b.max !== undefined ? Math.floor(b.max) : Infinity, b.exclusiveMax !== undefined ? Math.ceil(b.exclusiveMax) - 1 : Infinity];
  const lo = Math.max(...lows);
  const hi = Math.min(...highs);
  if (Math.abs(lo) > MAX_BOUND && lo !== -Infinity) return null;
  if (Math.abs(hi) > MAX_BOUND && hi !== Infinity) return null;
  const ints = integerPattern(lo, hi);
  if (integer) return ints;
  // A fraction (never zero: no trailing zeros) puts i.f strictly between i and i + 1, and -m.f
  // between -(m + 1) and -m: allowed where that whole open interval lies within the bounds
  // (inclusive or exclusive alike), with L and U the bounds' values.
  const L = Math.max(b.min ?? -Infinity, b.exclusiveMin ?? -Infinity);
  const U = Math.min(b.max ?? Infinity, b.exclusiveMax ?? Infinity);
  const parts = ints === null ? [] : [`(${ints})`];
  const FRACTION = '\\.[0-9]*[1-9]';
  const loPos = Math.max(0, Math.ceil(L));
  const hiPos = Math.floor(U) - 1;
  if (loPos <= hiPos) parts.push(`(${naturals(loPos, hiPos)})${FRACTION}`);
  const loNeg = Math.max(0, Math.ceil(-U));
  const hiNeg = Math.floor(-L - 1);
  if (loNeg <= hiNeg) parts.push(`-(${naturals(loNeg, hiNeg)})${FRACTION}`);
  return parts.length === 0 ? null : parts.join('|');
}
