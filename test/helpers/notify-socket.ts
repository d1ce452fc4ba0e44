import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'

interface T { teardown: (fn: () => unknown) => void }

/** python3 binds the datagram socket (Node cannot) and prints each datagram it receives as a JSON string, one a line. */
const RECEIVER = `
import json, os, socket, sys
name = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind('\\0' + name[1:] if name.startswith('@') else name)
print(json.dumps('bound'), flush=True)
while True:
    data = s.recv(65536)
    print(json.dumps(data.decode('utf-8', 'replace')), flush=True)
`

export interface NotifySocket {
  /** What to put in NOTIFY_SOCKET. */
  address: string
  /** Every datagram received so far, in order. */
  received: string[]
  /** Resolves with the first datagram (from `from` on) for which `pred` holds. */
  next: (pred: (msg: string) => boolean, timeoutMs?: number) => Promise<string>
}

/** A socket like systemd's NOTIFY_SOCKET at `address` (a path, or '@name' for an abstract one), read by the test. */
export async function notifySocket (t: T, address: string): Promise<NotifySocket> {
  const child = spawn('python3', ['-c', RECEIVER, address], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { child.kill('SIGKILL') })
  const received: string[] = []
  const waiters: Array<() => void> = []
  let bound: () => void = () => {}
  const ready = new Promise<void>(resolve => { bound = resolve })
  createInterface({ input: child.stdout }).on('line', line => {
    const msg = JSON.parse(line) as string
    if (msg === 'bound' && received.length === 0) { bound(); return }
    received.push(msg)
    for (const w of waiters.splice(0)) w()
  })
  await Promise.race([ready, new Promise((_resolve, reject) => child.once('exit', code => reject(new Error(`the notify receiver exited (${String(code)}) before binding ${address}`))))])
  const next = async (pred: (msg: string) => boolean, timeoutMs = 30_000): Promise<string> => {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const hit = received.find(pred)
      if (hit !== undefined) return hit
      if (Date.now() > deadline) throw new Error(`no matching notification within ${timeoutMs} ms; received: ${JSON.stringify(received)}`)
      await new Promise<void>(resolve => { waiters.push(resolve); setTimeout(resolve, 200) })
    }
  }
  return { address, received, next }
}
