import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Duplex } from 'node:stream'
import t from 'tap'
import { connect, listen, loadTls } from '../../src/net/transport.js'
import { quietLogger } from '../helpers/volume.js'

/** A CA, two host certificates it signed, and a self-signed intruder, made with openssl. */
function makePki (dir: string): void {
  const ssl = (...args: string[]): void => { execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' }) }
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-subj', '/CN=replfs-test-ca', '-days', '2')
  for (const h of ['a', 'b']) {
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${h}.key`, '-out', `${h}.csr`, '-subj', `/CN=host-${h}`)
    ssl('x509', '-req', '-in', `${h}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${h}.crt`, '-days', '2')
  }
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'evil.key', '-out', 'evil.crt', '-subj', '/CN=intruder', '-days', '2')
}

t.test('TLS: peers with certificates from the pair\'s CA talk; a certificate from elsewhere is refused', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'replfs-test-tls-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  makePki(dir)
  const f = (n: string): string => join(dir, n)
  const serverTls = await loadTls({ cert: f('b.crt'), key: f('b.key'), ca: f('ca.crt') })
  const got: Buffer[] = []
  const tlsErrors: Error[] = []
  const server = await listen({ host: '127.0.0.1', port: 0 }, serverTls, (s: Duplex) => {
    s.on('data', (d: Buffer) => { got.push(d); s.write(d) })
    s.on('error', () => {})
  }, quietLogger, err => tlsErrors.push(err))
  t.teardown(() => server.close())
  const port = (server.address() as { port: number }).port

  const good = await connect({ host: '127.0.0.1', port }, await loadTls({ cert: f('a.crt'), key: f('a.key'), ca: f('ca.crt') }))
  const echo = new Promise<Buffer>(resolve => good.once('data', resolve))
  good.write('over tls')
  t.equal((await echo).toString(), 'over tls', 'a peer signed by the CA is served')
  good.destroy()

  // TLS 1.3 completes the client's side before the server checks the client certificate, so the
  // refusal shows as a closed connection on the client and a TLS error on the server.
  const evil = await connect({ host: '127.0.0.1', port }, await loadTls({ cert: f('evil.crt'), key: f('evil.key'), ca: f('ca.crt') })).catch((err: Error) => err)
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

  await t.rejects(loadTls({ cert: f('missing.crt'), key: f('a.key'), ca: f('ca.crt') }), { code: 'BAD_ARGUMENT' }, 'a missing certificate file is a clear argument error')
})
