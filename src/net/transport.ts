import { readFile } from 'node:fs/promises'
import { type Server, type Socket, createConnection, createServer } from 'node:net'
import type { Duplex } from 'node:stream'
import { type PeerCertificate, type TLSSocket, checkServerIdentity, connect as tlsConnect, createServer as createTlsServer } from 'node:tls'
import type { Logger } from 'pino'
import { ReplfsError } from '../errors.js'
import { type AdmissionOptions, DEFAULT_ADMISSION, HandshakeAdmission, onAuthenticated } from './admission.js'

/** TCP or TLS between the two hosts; the replication protocol itself only sees duplex streams. */

export interface Endpoint { host: string, port: number }

export function parseEndpoint (s: string, what: string): Endpoint {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(s.trim())
  const port = m === null ? NaN : Number(m[3])
  if (m === null || port < 1 || port > 65535) {
    throw new ReplfsError('BAD_ARGUMENT', `${what} must be host:port (e.g. 10.0.0.2:7410 or [::1]:7410), not '${s}'`)
  }
  return { host: m[1] ?? m[2], port }
}

export function formatEndpoint (e: Endpoint): string {
  return e.host.includes(':') ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`
}

/** `peerFingerprint`: the peer's certificate, pinned (parseFingerprint's form); else its name is checked. */
export interface TlsFiles { cert: string, key: string, ca: string, peerFingerprint?: string }
export interface TlsMaterial { cert: Buffer, key: Buffer, ca: Buffer, peerFingerprint?: string }

/**
 * A pinned certificate fingerprint as given on the command line, `sha256:` and 64 hex digits
 * (colons between pairs allowed, as openssl prints them), in the form Node reports
 * (fingerprint256: upper case, colon-separated).
 */
export function parseFingerprint (s: string, what: string): string {
  const m = /^sha256:((?:[0-9a-fA-F]{2}:?){31}[0-9a-fA-F]{2})$/.exec(s.trim())
  const hex = m?.[1].replace(/:/g, '')
  if (m === null || hex === undefined || hex.length !== 64) {
    throw new ReplfsError('BAD_ARGUMENT', `${what} must be sha256: and 64 hex digits, not '${s}'`, {
      hint: 'Print the peer certificate\'s with: openssl x509 -in peer.crt -noout -fingerprint -sha256'
    })
  }
  return hex.toUpperCase().match(/../g)!.join(':')
}

/**
 * Why the peer's certificate is not the one this node expects, or undefined when it is: the
 * pinned fingerprint if there is one, else a certificate for `host` (subjectAltName DNS or IP).
 */
export function peerIdentityError (host: string, cert: PeerCertificate, pin: string | undefined): ReplfsError | undefined {
  if (pin !== undefined) {
    if (cert.fingerprint256 === pin) return undefined
    return new ReplfsError('AUTH_FAILED', `the peer's TLS certificate has fingerprint sha256:${cert.fingerprint256}, not the pinned sha256:${pin}`, {
      hint: 'Check --peer-fingerprint against the peer\'s certificate: openssl x509 -in peer.crt -noout -fingerprint -sha256'
    })
  }
  const err = checkServerIdentity(host, cert)
  if (err === undefined) return undefined
  return new ReplfsError('AUTH_FAILED', `the peer's TLS certificate is not for ${host}: ${err.message}`, {
    hint: `Give its certificate a subjectAltName for the --peer address (DNS:name or IP:address), or pin it with --peer-fingerprint sha256:...`,
    cause: err
  })
}

export async function loadTls (files: TlsFiles): Promise<TlsMaterial> {
  const read = async (p: string, what: string): Promise<Buffer> => {
    try {
      return await readFile(p)
    } catch (err) {
      throw new ReplfsError('BAD_ARGUMENT', `cannot read the TLS ${what} ${p}: ${(err as Error).message}`, { cause: err })
    }
  }
  return { cert: await read(files.cert, 'certificate'), key: await read(files.key, 'key'), ca: await read(files.ca, 'CA'), peerFingerprint: files.peerFingerprint }
}

/**
 * Accepts peer connections. With TLS both sides must present a certificate signed by the
 * configured CA (the pair's own CA), and with a pinned fingerprint the connecting peer's must be
 * that one (its name is not checked: it dials from any address). Connections that have not
 * authenticated yet are bounded in number and in time (admission.ts); the protocol says when one
 * has (markAuthenticated).
 */
export async function listen (at: Endpoint, tls: TlsMaterial | null, onStream: (s: Duplex, peer: string) => void, logger: Logger,
  onTlsError?: (err: Error) => void, admission: Partial<AdmissionOptions> = {}): Promise<Server> {
  const limits = { ...DEFAULT_ADMISSION, ...admission }
  const gate = new HandshakeAdmission(limits, logger.child({ component: 'admission' }))
  const handle = (sock: Socket | TLSSocket): void => {
    if (!gate.handOver(sock)) { sock.destroy(); return }
    const pin = tls?.peerFingerprint
    if (pin !== undefined && 'getPeerCertificate' in sock) {
      const err = peerIdentityError('', sock.getPeerCertificate(), pin)
      if (err !== undefined) {
        logger.warn({ err, peer: formatEndpoint({ host: sock.remoteAddress ?? '?', port: sock.remotePort ?? 0 }) }, 'a connecting peer presented another certificate than the pinned one')
        onTlsError?.(err)
        sock.destroy()
        return
      }
    }
    sock.setNoDelay(true)
    sock.setKeepAlive(true, 5000)
    onStream(sock, formatEndpoint({ host: sock.remoteAddress ?? '?', port: sock.remotePort ?? 0 }))
  }
  const server = tls === null
    ? createServer(handle)
    : createTlsServer({ cert: tls.cert, key: tls.key, ca: tls.ca, requestCert: true, rejectUnauthorized: true }, handle)
  // First of the 'connection' listeners: the TCP socket is counted before TLS or the protocol sees it.
  server.prependListener('connection', (raw: Socket) => gate.accepted(raw))
  server.on('tlsClientError', (err: Error) => {
    logger.warn({ err }, 'TLS handshake with a connecting peer failed')
    onTlsError?.(err)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new ReplfsError('BAD_ARGUMENT', `cannot listen on ${formatEndpoint(at)}: ${err.code ?? err.message}`, {
      hint: err.code === 'EADDRINUSE' ? 'Another process uses that port: pick another --listen' : undefined, cause: err
    })))
    server.listen(at.port, at.host, () => resolve())
  })
  server.on('error', err => logger.error({ err }, 'listener error'))
  return server
}

/** Opens one connection; resolves once it is established (TLS: once the handshake is done). */
export async function connect (to: Endpoint, tls: TlsMaterial | null, timeoutMs = 10_000): Promise<Duplex> {
  return await new Promise((resolve, reject) => {
    const sock: Socket = tls === null
      ? createConnection({ host: to.host, port: to.port })
      : tlsConnect({ host: to.host, port: to.port, cert: tls.cert, key: tls.key, ca: tls.ca, checkServerIdentity: (host, cert) => peerIdentityError(host, cert, tls.peerFingerprint) })
    const timer = setTimeout(() => sock.destroy(new Error(`connect timed out after ${timeoutMs} ms`)), timeoutMs)
    // Dialing a local port in the ephemeral range that nobody listens on can pick that very port
    // as the source: TCP then connects the socket to itself, and holds the port the peer is about
    // to listen on. Drop such a connection at once; the redial gets another source port.
    sock.once('connect', () => {
      if (sock.localPort === sock.remotePort && sock.localAddress === sock.remoteAddress) {
        sock.destroy(new Error(`connected to itself on ${formatEndpoint(to)} (nobody listens there yet)`))
      }
    })
    sock.once(tls === null ? 'connect' : 'secureConnect', () => {
      if (sock.destroyed) return
      clearTimeout(timer)
      sock.setNoDelay(true)
      sock.setKeepAlive(true, 5000)
      sock.removeAllListeners('error')
      resolve(sock)
    })
    sock.once('error', err => { clearTimeout(timer); sock.destroy(); reject(err) })
  })
}

/**
 * Keeps one outgoing connection alive: connect, hand the stream to `session` until it ends,
 * then retry with exponential backoff (reset after a session that got going).
 */
export class Redialer {
  private stopped = false
  private sleeping: { timer: NodeJS.Timeout | null, resolve: () => void } | null = null
  private loop: Promise<void> | null = null
  private current: Duplex | null = null
  attempts = 0

  constructor (
    private readonly to: Endpoint,
    private readonly tls: TlsMaterial | null,
    private readonly session: (s: Duplex, peer: string) => Promise<void>,
    private readonly logger: Logger,
    private readonly backoff = { minMs: 100, maxMs: 5000 },
    /** Resolves when a connection may be opened: none is open the other way (the peer dialed in). */
    private readonly idle?: () => Promise<void>,
    private readonly handshakeTimeoutMs = DEFAULT_ADMISSION.handshakeTimeoutMs
  ) {}

  start (): void {
    this.loop ??= this.run()
  }

  private async run (): Promise<void> {
    let delay = this.backoff.minMs
    while (!this.stopped) {
      await this.whenIdle()
      if (this.stopped) break
      const began = Date.now()
      let deadline: NodeJS.Timeout | undefined
      try {
        this.attempts++
        const s = await connect(this.to, this.tls).catch((err: Error & { code?: string }) => {
          // A peer with another certificate is an operator's problem, not a transient one: say so.
          if (err.code === 'AUTH_FAILED') this.logger.error({ err, peer: formatEndpoint(this.to) }, 'the peer\'s TLS certificate was refused')
          throw err
        })
        if (this.stopped) { s.destroy(); break }
        this.current = s
        // A peer that accepts but never proves itself must not hold this dialer forever.
        deadline = setTimeout(() => {
          this.logger.warn({ peer: formatEndpoint(this.to), timeoutMs: this.handshakeTimeoutMs }, 'the peer did not complete the handshake in time: closing the connection')
          s.destroy()
        }, this.handshakeTimeoutMs)
        const timer = deadline
        onAuthenticated(s, () => clearTimeout(timer))
        await this.session(s, formatEndpoint(this.to))
      } catch (err) {
        this.logger.debug({ err, peer: formatEndpoint(this.to) }, 'peer connection failed')
      } finally {
        clearTimeout(deadline)
        this.current = null
      }
      if (Date.now() - began > 10_000) delay = this.backoff.minMs
      await this.sleep(delay)
      delay = Math.min(delay * 2, this.backoff.maxMs)
    }
  }

  private async sleep (ms: number): Promise<void> {
    if (this.stopped) return
    await new Promise<void>(resolve => { this.sleeping = { timer: setTimeout(resolve, ms), resolve } })
    this.sleeping = null
  }

  /** Until `idle` says no connection runs the other way, or a halt or stop. */
  private async whenIdle (): Promise<void> {
    if (this.idle === undefined || this.stopped) return
    const idle = this.idle()
    await new Promise<void>(resolve => { this.sleeping = { timer: null, resolve }; idle.then(resolve, resolve) })
    this.sleeping = null
  }

  private wake (): void {
    if (this.sleeping === null) return
    if (this.sleeping.timer !== null) clearTimeout(this.sleeping.timer)
    this.sleeping.resolve()
  }

  /**
   * Stops redialing but leaves the current connection open: its stream was handed on (a primary
   * that demoted itself goes on receiving on it). Callable from inside a session.
   */
  halt (): void {
    this.stopped = true
    this.wake()
  }

  /** Stops redialing and ends the current connection (its session then returns). */
  async stop (): Promise<void> {
    this.stopped = true
    this.current?.destroy()
    this.wake()
    await this.loop
  }
}
