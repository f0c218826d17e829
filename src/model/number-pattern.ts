/**
 * Patterns of the JSON numbers within bounds (a schema's minimum / maximum / exclusiveMinimum /
 * exclusiveMaximum), for guided decoding to run as an NFA (regex.ts). Integers are written without
 * leading zeros, sign of zero or exponent; a bounded number is an integer in range, or an integer
 * part and a fraction (any digits, trailing zeros too) whose value is in range, the fraction's digits
 * compared with the bounds' own decimal digits (as a schema writes them: 0.3 is 0.3, not the binary
 * double near it). No exponents: every number within the bounds has a written form, none outside.
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
 * Digit strings R whose value 0.R lies within bounds given by their own fraction digits (lo, hi;
 * null: none on that side; '' with a strict lo: above zero); the empty string too unless `nonEmpty`.
 * Built digit by digit: a digit below lo's (or above hi's) is out, one strictly between frees that
 * side, one equal to it carries the rest of the bound to the next digit. Null when none is.
 */
function fractionDigits(lo: string | null, loStrict: boolean, hi: string | null, hiStrict: boolean, nonEmpty: boolean): string | null {
  if (lo === '' && !loStrict) lo = null;
  if (hi === '' && hiStrict) return null; // below zero
  if (hi === '') return lo === null ? (nonEmpty ? '0+' : '0*') : null; // zeros only
  if (lo === '' && hi === null) return '0*[1-9][0-9]*'; // above zero
  if (lo === null && hi === null) return nonEmpty ? '[0-9]+' : '[0-9]*';
  const byDigit: Array<string | null> = [];
  for (let d = 0; d <= 9; d++) {
    let nextLo: string | null = null;
    if (lo === '') nextLo = d === 0 ? '' : null;
    else if (lo !== null) {
      const l = Number(lo[0]);
      if (d < l) {
        byDigit.push(null);
        continue;
      }
      nextLo = d === l ? lo.slice(1) : null;
    }
    let nextHi: string | null = null;
    if (hi !== null) {
      const h = Number(hi[0]);
      if (d > h) {
        byDigit.push(null);
        continue;
      }
      nextHi = d === h ? hi.slice(1) : null;
    }
    byDigit.push(fractionDigits(nextLo, loStrict, nextHi, hiStrict, false));
  }
  // Digits in a row with the same rest: one class.
  const alts: string[] = [];
  for (let d = 0; d <= 9; ) {
    const rest = byDigit[d];
    let e = d;
    while (e < 9 && byDigit[e + 1] === rest) e++;
    if (rest !== null) alts.push(`${d === e ? d : `[${d}-${e}]`}${rest.includes('|') ? `(${rest})` : rest}`);
    d = e + 1;
  }
  if (alts.length === 0) return null;
  // Nothing more is 0: within the bounds when there is no lower one.
  return !nonEmpty && lo === null ? `(${alts.join('|')})?` : alts.join('|');
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
  // The binding bound of each side (an exclusive one where it ties an inclusive one).
  const low = tighter(b.min, b.exclusiveMin, 1);
  const high = tighter(b.max, b.exclusiveMax, -1);
  // An empty range (the patterns of each side's fractions below would not see it when the bounds' integer parts differ).
  if (low && high && (low.v > high.v || (low.v === high.v && (low.strict || high.strict)))) return null;
  const parts = ints === null ? [] : [`(${ints})`];
  // Numbers with a fraction: non-negative ones within the bounds, and negative ones whose magnitude is
  // within the bounds turned round.
  for (const p of withFraction(low && low.v >= 0 ? low : null, high)) parts.push(p);
  if (low === null || low.v <= 0) {
    for (const p of withFraction(high && high.v <= 0 ? { v: -high.v, strict: high.strict } : null, low && { v: -low.v, strict: low.strict })) parts.push(`-${p}`);
  }
  return parts.length === 0 ? null : parts.join('|');
}

export interface Bound {
  v: number;
  strict: boolean;
}

/** The binding one of an inclusive and an exclusive bound on one side (side 1: lower, -1: upper); null for none. */
export function tighter(inclusive: number | undefined, exclusive: number | undefined, side: 1 | -1): Bound | null {
  if (inclusive === undefined && exclusive === undefined) return null;
  if (exclusive === undefined) return { v: inclusive!, strict: false };
  if (inclusive === undefined || side * exclusive >= side * inclusive) return { v: exclusive, strict: true };
  return { v: inclusive, strict: false };
}

/** A finite number's decimal value, as JavaScript writes it shortest (its schema's own digits): |v| = digits / 10^scale. */
export function decimalOf(v: number): { negative: boolean; digits: bigint; scale: number } {
  const [mantissa, exp] = String(Math.abs(v)).split('e');
  const [int, frac = ''] = mantissa.split('.');
  let digits = BigInt(int + frac);
  let scale = frac.length - Number(exp ?? 0);
  if (scale < 0) {
    digits *= 10n ** BigInt(-scale);
    scale = 0;
  }
  return { negative: v < 0, digits, scale };
}

/** A non-negative bound's integer part and fraction digits (no trailing zeros). */
function decimal(v: number): [number, string] {
  const { digits, scale } = decimalOf(v);
  const text = digits.toString().padStart(scale + 1, '0');
  return [Math.floor(v), text.slice(text.length - scale).replace(/0+$/, '')];
}

/**
 * Patterns of the numbers written with a point, i.f, within non-negative bounds (lo null: from 0, hi
 * null: none): at the bounds' integer parts, the fractions their own fraction digits allow; strictly
 * between them, every fraction.
 */
function withFraction(lo: Bound | null, hi: Bound | null): string[] {
  if (hi !== null && hi.v < 0) return [];
  const [iLo, fLo] = lo ? decimal(lo.v) : [0, null];
  const [iHi, fHi] = hi ? decimal(hi.v) : [Infinity, null];
  const out: string[] = [];
  const at = (i: number, f: string | null) => f !== null && out.push(`${i}\\.${f.includes('|') ? `(${f})` : f}`);
  if (iLo === iHi) {
    at(iLo, fractionDigits(fLo, lo?.strict ?? false, fHi, hi!.strict, true));
    return out;
  }
  at(iLo, fractionDigits(fLo, lo?.strict ?? false, null, false, true));
  if (iLo + 1 <= iHi - 1) out.push(`(${naturals(iLo + 1, iHi - 1)})\\.[0-9]+`);
  if (iHi !== Infinity) at(iHi, fractionDigits(null, false, fHi, hi!.strict, true));
  return out;
}
