import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Duplex } from 'node:stream'
import t, { type Test } from 'tap'
import { type TlsMaterial, connect, listen, loadTls, parseFingerprint } from '../../src/net/transport.js'
import { cli } from '../helpers/mount.js'
import { quietLogger } from '../helpers/volume.js'

/**
 * A CA; hosts a and b it signed for 127.0.0.1 (where the tests dial them); host c it signed for
 * another name only; and a self-signed intruder. Made with openssl.
 */
function makePki (dir: string): void {
  const ssl = (...args: string[]): void => { execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' }) }
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-subj', '/CN=replfs-test-ca', '-days', '2')
  for (const [h, san] of [['a', 'IP:127.0.0.1'], ['b', 'IP:127.0.0.1,DNS:host-b'], ['c', 'DNS:elsewhere.example']]) {
    writeFileSync(join(dir, `${h}.ext`), `subjectAltName=${san}\n`)
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${h}.key`, '-out', `${h}.csr`, '-subj', `/CN=host-${h}`)
    ssl('x509', '-req', '-in', `${h}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${h}.crt`, '-days', '2', '-extfile', `${h}.ext`)
  }
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'evil.key', '-out', 'evil.crt', '-subj', '/CN=intruder', '-days', '2')
}

/** The certificate's SHA-256 fingerprint as openssl prints it (sha256 Fingerprint=AB:CD:...). */
function fingerprintOf (dir: string, crt: string): string {
  const out = execFileSync('openssl', ['x509', '-in', join(dir, crt), '-noout', '-fingerprint', '-sha256'], { encoding: 'utf8' })
  return 'sha256:' + out.trim().split('=')[1]
}

let pki: string | null = null
function pkiDir (): string {
  if (pki === null) {
    const dir = mkdtempSync(join(tmpdir(), 'replfs-test-tls-'))
    makePki(dir)
    pki = dir
  }
  return pki
}
t.teardown(() => { if (pki !== null) rmSync(pki, { recursive: true, force: true }) })

async function material (dir: string, host: string, peerFingerprint?: string): Promise<TlsMaterial> {
  return await loadTls({ cert: join(dir, `${host}.crt`), key: join(dir, `${host}.key`), ca: join(dir, 'ca.crt'), peerFingerprint })
}

/** An echo server over TLS with `host`'s certificate; what reached its stream handler, and its TLS errors. */
async function echoServer (t: Test, tls: TlsMaterial): Promise<{ port: number, got: Buffer[], tlsErrors: Error[] }> {
  const got: Buffer[] = []
  const tlsErrors: Error[] = []
  const server = await listen({ host: '127.0.0.1', port: 0 }, tls, (s: Duplex) => {
    s.on('data', (d: Buffer) => { got.push(d); s.write(d) })
    s.on('error', () => {})
  }, quietLogger, err => tlsErrors.push(err))
  t.teardown(() => server.close())
  return { port: (server.address() as { port: number }).port, got, tlsErrors }
}

async function echoes (s: Duplex, text: string): Promise<string> {
  const echo = new Promise<Buffer>(resolve => s.once('data', resolve))
  s.write(text)
  const got = (await echo).toString()
  s.destroy()
  return got
}

t.test('TLS: peers with certificates from the pair\'s CA talk; a certificate from elsewhere is refused', async t => {
  const dir = pkiDir()
  const { port, got, tlsErrors } = await echoServer(t, await material(dir, 'b'))
  t.equal(await echoes(await connect({ host: '127.0.0.1', port }, await material(dir, 'a')), 'over tls'), 'over tls', 'a peer signed by the CA, for the address dialed, is served')

  // TLS 1.3 completes the client's side before the server checks the client certificate, so the
  // refusal shows as a closed connection on the client and a TLS error on the server.
  const evil = await connect({ host: '127.0.0.1', port }, await loadTls({ cert: join(dir, 'evil.crt'), key: join(dir, 'evil.key'), ca: join(dir, 'ca.crt') })).catch((err: Error) => err)
  if (!(evil instanceof Error)) {
    evil.on('error', () => {})
    evil.write('let me in')
    await new Promise(resolve => evil.once('close', resolve))
  }
  t.ok(tlsErrors.length >= 1, `the server reports the refused certificate (${tlsErrors[0]?.message ?? 'none'})`)
  t.equal(Buffer.concat(got).toString(), 'over tls', 'nothing from the intruder reached the server\'s stream handler')

  const plain = await connect({ host: '127.0.0.1', port }, null)
  plain.on('error', () => {})
  plain.write('plain text hello\n')
  await new Promise(resolve => plain.once('close', resolve))
  t.equal(Buffer.concat(got).toString(), 'over tls', 'a plain TCP peer is not served either')

  await t.rejects(loadTls({ cert: join(dir, 'missing.crt'), key: join(dir, 'a.key'), ca: join(dir, 'ca.crt') }), { code: 'BAD_ARGUMENT' }, 'a missing certificate file is a clear argument error')
})

t.test('TLS without a pin: a server whose certificate (from the pair\'s CA) is for another name is refused by the dialer', async t => {
  const dir = pkiDir()
  const { port, got } = await echoServer(t, await material(dir, 'c'))
  await t.rejects(connect({ host: '127.0.0.1', port }, await material(dir, 'a')), {
    code: 'AUTH_FAILED',
    message: /the peer's TLS certificate is not for 127\.0\.0\.1/,
    hint: /subjectAltName for the --peer address .* or pin it with --peer-fingerprint/
  })
  t.same(got, [], 'nothing was sent to it')
})

t.test('TLS with --peer-fingerprint: the pinned certificate connects (whatever its name), any other is refused with a clear error', async t => {
  const dir = pkiDir()
  const { port } = await echoServer(t, await material(dir, 'c'))
  const pinC = parseFingerprint(fingerprintOf(dir, 'c.crt'), '--peer-fingerprint')
  t.equal(await echoes(await connect({ host: '127.0.0.1', port }, await material(dir, 'a', pinC)), 'pinned'), 'pinned', 'the pinned certificate is accepted')
  const pinB = parseFingerprint(fingerprintOf(dir, 'b.crt'), '--peer-fingerprint')
  await t.rejects(connect({ host: '127.0.0.1', port }, await material(dir, 'a', pinB)), {
    code: 'AUTH_FAILED',
    message: new RegExp(`has fingerprint sha256:${pinC}, not the pinned sha256:${pinB}`)
  }, 'another certificate of the same CA is refused, naming both fingerprints')

  // The listening side checks the pin too: only the pinned dialer is served.
  const pinA = parseFingerprint(fingerprintOf(dir, 'a.crt'), '--peer-fingerprint')
  const pinned = await echoServer(t, await material(dir, 'b', pinA))
  t.equal(await echoes(await connect({ host: '127.0.0.1', port: pinned.port }, await material(dir, 'a')), 'from a'), 'from a', 'the pinned dialer is served')
  const other = await connect({ host: '127.0.0.1', port: pinned.port }, await material(dir, 'c'))
  other.on('error', () => {})
  other.write('from c')
  await new Promise(resolve => other.once('close', resolve))
  t.equal(Buffer.concat(pinned.got).toString(), 'from a', 'a dialer with another certificate of the CA is not served')
  t.match(pinned.tlsErrors.map(e => e.message), [/has fingerprint sha256:.*, not the pinned/], 'and the refusal is reported')
})

t.test('--peer-fingerprint is checked: its form, and that TLS is on', async t => {
  const hex = 'ab'.repeat(32)
  const want = hex.toUpperCase().match(/../g)!.join(':')
  t.equal(parseFingerprint(`sha256:${hex}`, 'x'), want, 'plain lower-case hex')
  t.equal(parseFingerprint(`sha256:${want}`, 'x'), want, 'colon-separated, as openssl prints it')
  for (const bad of [hex, `sha1:${hex}`, `sha256:${hex.slice(2)}`, `sha256:${hex}ab`, `sha256:${'zz'.repeat(32)}`]) {
    t.throws(() => parseFingerprint(bad, '--peer-fingerprint'), { code: 'BAD_ARGUMENT', message: /--peer-fingerprint must be sha256: and 64 hex digits/ }, `refuses ${bad}`)
  }
  const base = ['mount', join(tmpdir(), 'replfs-no-mnt'), '--store', join(tmpdir(), 'replfs-no-store'), '--role', 'primary', '--listen', '127.0.0.1:7999', '--peer', '127.0.0.1:7998', '--insecure']
  const noTls = cli([...base, '--peer-fingerprint', `sha256:${hex}`])
  t.not(noTls.code, 0)
  t.match(noTls.stderr, /--peer-fingerprint pins the peer's TLS certificate: it needs --tls-cert, --tls-key and --tls-ca/)
  const dir = pkiDir()
  const malformed = cli([...base, '--tls-cert', join(dir, 'a.crt'), '--tls-key', join(dir, 'a.key'), '--tls-ca', join(dir, 'ca.crt'), '--peer-fingerprint', 'sha256:nope'])
  t.not(malformed.code, 0)
  t.match(malformed.stderr, /--peer-fingerprint must be sha256: and 64 hex digits, not 'sha256:nope'/)
  t.match(malformed.stderr, /openssl x509 -in peer\.crt -noout -fingerprint -sha256/, 'with the command that prints one')
})
