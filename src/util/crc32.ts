/**
 * CRC-32 (zlib's) of concatenations without reading the bytes again: crc(A‖B) from crc(A),
 * crc(B) and |B|, and crc(B) back from crc(A‖B), crc(A) and |B|. A record's bytes are summed once
 * where the record is made or received; the envelopes around it (journal entry: seq‖record; wire
 * frame: type‖seq‖record; the store's last-record crc: record) derive theirs from that sum. One
 * pass over a 1 MiB record costs ~0.3 ms here, and a record crossed up to three.
 *
 * The method is zlib's crc32_combine: multiply crc(A) by x^(8|B|) modulo the CRC polynomial
 * (reflected), then add (xor) crc(B). zlib's pre- and post-conditioning cancel out in the xor.
 */

const POLY = 0xedb88320

/** a * b modulo the polynomial; a must not be 0 (it never is: a power of x). */
function multModP (a: number, b: number): number {
  let m = 0x80000000
  let p = 0
  for (;;) {
    if ((a & m) !== 0) {
      p ^= b
      if ((a & (m - 1)) === 0) break
    }
    m >>>= 1
    b = (b & 1) !== 0 ? (b >>> 1) ^ POLY : b >>> 1
  }
  return p >>> 0
}

/** X2N[k] = x^(2^k) modulo the polynomial. */
const X2N: number[] = [0x40000000]
for (let k = 1; k < 32; k++) X2N.push(multModP(X2N[k - 1], X2N[k - 1]))

/** x^(n * 2^k) modulo the polynomial (n up to 2^53). */
function x2nModP (n: number, k: number): number {
  let p = 0x80000000 // x^0
  while (n > 0) {
    if (n % 2 === 1) p = multModP(X2N[k & 31], p)
    n = Math.floor(n / 2)
    k++
  }
  return p
}

/** crc32(A‖B), given crc32(A), crc32(B) and B's length. */
export function crc32Combine (crcA: number, crcB: number, lengthB: number): number {
  return (multModP(x2nModP(lengthB, 3), crcA >>> 0) ^ crcB) >>> 0
}

/** crc32(B), given crc32(A‖B), crc32(A) and B's length: the same sum, since xor undoes itself. */
export function crc32Suffix (crcAB: number, crcA: number, lengthB: number): number {
  return crc32Combine(crcA, crcAB, lengthB)
}
