import t from 'tap'
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { checkProof, isNonce, newNonce, pickProtocol, proof, readSecretFile } from '../../src/repl/auth.js'

const secret = Buffer.from('correct horse battery staple 0123456789')
const other = Buffer.from('incorrect horse battery staple 012345678')

const hello = (o: object): Buffer => Buffer.from(JSON.stringify(o))

t.test('a proof verifies with the right secret, side and both HELLOs as sent, and nothing else', async t => {
  const dNonce = newNonce()
  const lNonce = newNonce()
  t.ok(isNonce(dNonce) && dNonce !== lNonce, 'nonces are fresh 64-char hex')
  const dialerHello = hello({ protocolMin: 3, protocolMax: 3, role: 'primary', volumeId: 'vol-1', nonce: dNonce, auth: true })
  const listenerHello = hello({ protocol: 3, role: 'secondary', volumeId: 'vol-1', nonce: lNonce, auth: true })
  const tr = { dialerHello, listenerHello }
  const p = proof(secret, 'dialer', tr)
  t.ok(checkProof(secret, 'dialer', tr, p), 'right secret')
  t.notOk(checkProof(other, 'dialer', tr, p), 'wrong secret')
  t.notOk(checkProof(secret, 'dialer', { dialerHello: listenerHello, listenerHello: dialerHello }, p), 'swapped HELLOs')
  // Reflection: the listener cannot send the dialer's own proof back as its own: the side is bound in.
  t.notOk(checkProof(secret, 'listener', tr, p), 'a proof reflected back to its author')
  // Relay: a man in the middle that rewrites the listener's HELLO (to pose as an empty secondary)
  // makes the dialer sign a HELLO the listener never sent.
  const rewritten = hello({ protocol: 3, role: 'secondary', volumeId: null, nonce: lNonce, auth: true })
  t.notOk(checkProof(secret, 'dialer', { dialerHello, listenerHello: rewritten }, p), 'a rewritten listener HELLO')
  t.notOk(checkProof(secret, 'dialer', { dialerHello: hello({ protocolMin: 3, protocolMax: 3, role: 'primary', volumeId: 'vol-2', nonce: dNonce, auth: true }), listenerHello }, p), 'another volume')
  // Replay: the same proof on a new connection, whose listener picked a fresh nonce.
  const next = { dialerHello, listenerHello: hello({ protocol: 3, role: 'secondary', volumeId: 'vol-1', nonce: newNonce(), auth: true }) }
  t.notOk(checkProof(secret, 'dialer', next, p), 'a proof replayed on a connection with another listener nonce')
  for (const bad of [undefined, null, 42, { p }, [p], '', p.slice(0, 63), p + '0', p.toUpperCase(), 'z'.repeat(64)]) {
    t.notOk(checkProof(secret, 'dialer', tr, bad), `refuses ${JSON.stringify(bad) ?? String(bad)}`)
  }
  t.notOk(isNonce('abc') || isNonce(7), 'isNonce refuses other shapes')
})

t.test('readSecretFile accepts only a private file of at least 16 bytes', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'replfs-test-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const good = join(dir, 'good')
  await writeFile(good, 'c2VjcmV0IHNlY3JldCBzZWNyZXQ=\n', { mode: 0o600 })
  await chmod(good, 0o600)
  t.same(await readSecretFile(good), Buffer.from('c2VjcmV0IHNlY3JldCBzZWNyZXQ='), 'trailing newline trimmed')

  const open = join(dir, 'open')
  await writeFile(open, 'c2VjcmV0IHNlY3JldCBzZWNyZXQ=\n')
  await chmod(open, 0o644)
  await t.rejects(readSecretFile(open), { code: 'BAD_ARGUMENT', hint: new RegExp(`chmod 600 ${open}`) }, '0644')

  const short = join(dir, 'short')
  await writeFile(short, '0123456789abcde \n\n')
  await chmod(short, 0o600)
  await t.rejects(readSecretFile(short), { code: 'BAD_ARGUMENT', message: /15 bytes/, hint: /head -c 32 \/dev\/urandom \| base64/ }, 'short after trimming')

  await t.rejects(readSecretFile(join(dir, 'missing')), { code: 'BAD_ARGUMENT', message: /does not exist/, hint: /head -c 32 \/dev\/urandom/ }, 'missing')
  await t.rejects(readSecretFile(dir), { code: 'BAD_ARGUMENT' }, 'a directory')
})

t.test('pickProtocol picks the highest common version and refuses protocol 2, which proved the listener first', async t => {
  t.equal(pickProtocol(3, 3), 3)
  t.equal(pickProtocol(3, 5), 3, 'a newer peer that still speaks 3')
  t.equal(pickProtocol(0, 3), 3)
  t.equal(pickProtocol(2, 2), null, 'a peer of protocol 2 (listener proves first): refused')
  t.equal(pickProtocol(1, 1), null, 'a peer of protocol 1, from before generations: refused')
  t.equal(pickProtocol(4, 5), null, 'a peer too new')
  t.equal(pickProtocol(4, 1), null, 'an inverted range')
  t.equal(pickProtocol(Number.NaN, 3), null)
  t.equal(pickProtocol(3, 3.5), null)
})
