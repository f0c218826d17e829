/** The tests' own exact check of multipleOf, by integer arithmetic on decimal texts (apart from src/model/multiple-of.ts). */

/** Whether decimal text x (no exponent) is a multiple of decimal text m. */
export function isMultiple(x: string, m: string): boolean {
  const parts = (t: string) => {
    const [int, frac = ''] = t.replace('-', '').split('.');
    return { digits: BigInt(int + frac), scale: frac.length };
  };
  const a = parts(x);
  const b = parts(m);
  return (a.digits * 10n ** BigInt(b.scale)) % (b.digits * 10n ** BigInt(a.scale)) === 0n;
}
