/**
 * A number's `multipleOf`, for guided decoding. The divisor is read from its own decimal digits
 * (0.01 is one hundredth, not the double nearest it) as K / 10^e, and a number x is a multiple when
 * x * 10^e is an integer that K divides. A reply's number is followed digit by digit: the remainder
 * mod K of its digits so far, and how many fraction digits it has; a digit is refused when the places
 * left (integer digits within a cap, and the fraction's) could no longer make a multiple, so a guide
 * never walks into a number that cannot end. Within
 * two bounds the multiples are few and are listed instead (multiplesWithin).
 */
import { decimalOf } from './number-pattern.js';

/** A multipleOf divisor as K / 10^e. */
export interface Multiple {
  readonly k: number;
  readonly e: number;
}

/** Largest K and e handled: remainders stay exact in doubles (K * 10 < 2^53). */
export const MAX_MULTIPLE_DIGITS = 12;

/** The divisor of a multipleOf value; null when it is not a positive number of at most MAX_MULTIPLE_DIGITS digits and places. */
export function multipleOf(v: number): Multiple | null {
  if (!Number.isFinite(v) || v <= 0) return null;
  let { digits, scale } = decimalOf(v);
  while (scale > 0 && digits % 10n === 0n) {
    digits /= 10n;
    scale--;
  }
  if (scale > MAX_MULTIPLE_DIGITS || digits >= 10n ** BigInt(MAX_MULTIPLE_DIGITS)) return null;
  return { k: Number(digits), e: scale };
}

/** (r * 10^places) mod k, without leaving exact doubles. */
function shifted(m: Multiple, r: number, places: number): number {
  for (let i = 0; i < places; i++) r = (r * 10) % m.k;
  return r;
}

/** Whether the places left (up to e fraction digits in all, `places` of them) can still make r a multiple. */
function completable(m: Multiple, r: number, places: number): boolean {
  const need = (m.k - shifted(m, r, places)) % m.k;
  return need < 10 ** places;
}

/** Where a number may still go on: integer digits it may still have, and whether it may have a fraction. */
export interface Room {
  integerPlaces: number;
  fractions: boolean;
}

/**
 * Whether an integer part whose digits so far leave remainder r can still end as a multiple: with up
 * to `room.integerPlaces` more integer digits and, if it may, up to e fraction digits (more places
 * only ever add ways, so the most are tried). An integer's scaled value is I * 10^e, a multiple when
 * I is one of k / gcd(k, 10^e).
 */
function reachable(m: Multiple, r: number, room: Room): boolean {
  if (room.fractions) return completable(m, r, room.integerPlaces + m.e);
  let unit = 1;
  for (let i = 0; i < m.e; i++) unit *= 10;
  const k = m.k / gcdOf(m.k, unit);
  return completable({ k, e: 0 }, r % k, room.integerPlaces);
}

const gcdOf = (a: number, b: number): number => (b === 0 ? a : gcdOf(b, a % b));

/**
 * A number's next byte, for its multiple: the remainder (state.r) and fraction digits written (state.f,
 * -1 in the integer part) updated; false where no multiple goes on this way (an exponent, a digit the
 * places left cannot make up for: with `room`, the integer digits left after it too).
 */
export function stepMultiple(m: Multiple, state: { r: number; f: number }, b: number, room?: Room): boolean {
  if (b === 0x2d) return true; // the sign
  if (b === 0x2e) {
    state.f = 0;
    return completable(m, state.r, m.e);
  }
  if (b < 0x30 || b > 0x39) return false; // no exponent: every multiple has a form without
  const d = b - 0x30;
  if (state.f < 0) {
    state.r = (state.r * 10 + d) % m.k;
    return room === undefined || reachable(m, state.r, room);
  }
  // Past e places a digit adds nothing a multiple could use: zeros only.
  if (state.f >= m.e) return d === 0;
  state.r = (state.r * 10 + d) % m.k;
  state.f++;
  return completable(m, state.r, m.e - state.f);
}

/** Whether the number written is a multiple. */
export function endsMultiple(m: Multiple, state: { r: number; f: number }): boolean {
  return shifted(m, state.r, m.e - Math.max(state.f, 0)) === 0;
}

/** A bound's value times 10^e, rounded up (a lower bound) or down (an upper one), exactly. */
function scaledBound(v: number, e: number, up: boolean): bigint {
  const { negative, digits, scale } = decimalOf(v);
  const num = (negative ? -digits : digits) * 10n ** BigInt(e);
  const den = 10n ** BigInt(scale);
  const q = num / den; // truncated toward zero
  const exact = q * den === num;
  if (exact) return q;
  return up ? (num > 0n ? q + 1n : q) : num > 0n ? q : q - 1n;
}

/**
 * The multiples within two finite bounds (each inclusive, or exclusive when `strict`), integers only
 * when `integer`, written as decimals without exponent or trailing zeros; null when there are more
 * than `most`.
 */
export function multiplesWithin(m: Multiple, lo: { v: number; strict: boolean }, hi: { v: number; strict: boolean }, integer: boolean, most: number): string[] | null {
  const unit = 10n ** BigInt(m.e);
  // Scaled values are q * step: every multiple, or (integers only) those that 10^e divides too.
  const step = integer ? lcm(BigInt(m.k), unit) : BigInt(m.k);
  const ceilDiv = (x: bigint) => (x >= 0n ? (x + step - 1n) / step : -(-x / step));
  const floorDiv = (x: bigint) => (x >= 0n ? x / step : -((-x + step - 1n) / step));
  const a = scaledBound(lo.v, m.e, true);
  const b = scaledBound(hi.v, m.e, false);
  // A bound that is itself a multiple is left out when it is exclusive.
  const isBound = (x: bigint, v: number) => scaledBound(v, m.e, true) === x && scaledBound(v, m.e, false) === x;
  let qLo = ceilDiv(a);
  let qHi = floorDiv(b);
  if (lo.strict && isBound(qLo * step, lo.v)) qLo++;
  if (hi.strict && isBound(qHi * step, hi.v)) qHi--;
  if (qHi - qLo + 1n > BigInt(most)) return null;
  const out: string[] = [];
  for (let q = qLo; q <= qHi; q++) out.push(decimalText(q * step, m.e));
  return out;
}

const gcd = (a: bigint, b: bigint): bigint => (b === 0n ? a : gcd(b, a % b));
const lcm = (a: bigint, b: bigint): bigint => (a / gcd(a, b)) * b;

/** x / 10^e written as a decimal: no exponent, no trailing zeros. */
function decimalText(x: bigint, e: number): string {
  const negative = x < 0n;
  const text = (negative ? -x : x).toString().padStart(e + 1, '0');
  const int = text.slice(0, text.length - e);
  const frac = text.slice(text.length - e).replace(/0+$/, '');
  return `${negative && (int !== '0' || frac !== '') ? '-' : ''}${int}${frac ? `.${frac}` : ''}`;
}
