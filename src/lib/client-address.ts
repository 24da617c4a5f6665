// The unit a per-client limit counts: an IPv4 address, or the /64 of an IPv6
// address (one host is routinely handed a whole /64, so counting single
// addresses lets it rotate through 2^64 of them). IPv4-mapped IPv6
// (::ffff:192.0.2.1, as a dual-stack socket reports IPv4 peers) counts as IPv4.
import { isIPv4, isIPv6 } from 'node:net'

/** The 8 hextets of an IPv6 address, as numbers. */
function hextets(address: string): number[] {
  const [head, tail] = address.includes('::') ? address.split('::') as [string, string] : [address, undefined]
  const parse = (part: string) => (part ? part.split(':') : [])
  let left = parse(head)
  let right = tail === undefined ? [] : parse(tail)
  // An embedded IPv4 tail (::ffff:1.2.3.4, 64:ff9b::1.2.3.4) is two hextets.
  const expandV4 = (groups: string[]) => groups.flatMap((g) => {
    if (!isIPv4(g)) return [g]
    const [a, b, c, d] = g.split('.').map(Number) as [number, number, number, number]
    return [((a << 8) | b).toString(16), ((c << 8) | d).toString(16)]
  })
  left = expandV4(left)
  right = expandV4(right)
  const zeros = tail === undefined ? [] : Array<string>(8 - left.length - right.length).fill('0')
  return [...left, ...zeros, ...right].map((g) => parseInt(g, 16))
}

/** `203.0.113.7` → `203.0.113.7`; `2001:db8:a:b:1:2:3:4` → `2001:db8:a:b::/64`; `::ffff:203.0.113.7` (any spelling) → `203.0.113.7`. */
export function clientAddressKey(ip: string): string {
  // IPv4, the usual case, without a regex: this runs for every failed credential.
  if (!ip.includes(':')) return ip
  const address = ip.replace(/%.*$/, '') // zone id
  if (!isIPv6(address)) return address
  const h = hextets(address)
  // ::ffff:0:0/96, however it is written (::ffff:c633:6407, 0:0:0:0:0:ffff:1.2.3.4, …).
  if (h.slice(0, 5).every((x) => x === 0) && h[5] === 0xffff) {
    return [h[6]! >> 8, h[6]! & 255, h[7]! >> 8, h[7]! & 255].join('.')
  }
  return `${h.slice(0, 4).map((x) => x.toString(16)).join(':')}::/64`
}
