import t from 'tap'
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { checkProof, isNonce, newNonce, pickProtocol, proof, readSecretFile } from '../../src/repl/auth.js'

const secret = Buffer.from('correct horse battery staple 0123456789')
const other = Buffer.from('incorrect horse battery staple 012345678')

t.test('a proof verifies with the right secret, nonces, roles and volume, and nothing else', async t => {
  const pNonce = newNonce()
  const sNonce = newNonce()
  t.ok(isNonce(pNonce) && pNonce !== sNonce, 'nonces are fresh 64-char hex')
  const p = proof(secret, 'primary', pNonce, sNonce, 'vol-1')
  t.ok(checkProof(secret, 'primary', pNonce, sNonce, 'vol-1', p), 'right secret')
  t.notOk(checkProof(other, 'primary', pNonce, sNonce, 'vol-1', p), 'wrong secret')
  t.notOk(checkProof(secret, 'primary', sNonce, pNonce, 'vol-1', p), 'swapped nonces')
  t.notOk(checkProof(secret, 'secondary', pNonce, sNonce, 'vol-1', p), 'swapped role')
  t.notOk(checkProof(secret, 'primary', pNonce, sNonce, 'vol-2', p), 'other volume')
  // Reflection: a secondary that sends the primary's own nonce back cannot reuse the primary's
  // proof as its own, because the roles are bound in.
  const reflected = proof(secret, 'primary', pNonce, pNonce, 'vol-1')
  t.notOk(checkProof(secret, 'secondary', pNonce, pNonce, 'vol-1', reflected), 'a proof reflected back to its author')
  for (const bad of [undefined, null, 42, { p }, [p], '', p.slice(0, 63), p + '0', p.toUpperCase(), 'z'.repeat(64)]) {
    t.notOk(checkProof(secret, 'primary', pNonce, sNonce, 'vol-1', bad), `refuses ${JSON.stringify(bad) ?? String(bad)}`)
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

t.test('pickProtocol picks the highest common version', async t => {
  t.equal(pickProtocol(2, 2), 2)
  t.equal(pickProtocol(2, 5), 2, 'a newer peer that still speaks 2')
  t.equal(pickProtocol(0, 2), 2)
  t.equal(pickProtocol(3, 4), null, 'a peer too new')
  t.equal(pickProtocol(1, 1), null, 'a peer of protocol 1, from before generations: refused')
  t.equal(pickProtocol(3, 1), null, 'an inverted range')
  t.equal(pickProtocol(Number.NaN, 2), null)
  t.equal(pickProtocol(2, 2.5), null)
})
