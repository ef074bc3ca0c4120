// "Verify a receipt" (/verify): checks a receipt file in this browser, with no upload.
// The checks and their wording follow settlement/ledger.py (`verify_receipt`) in the
// same order, so the page and `python -m settlement verify` name the same first fault;
// then the server signature (keys from GET /api/keys) and the parties' signatures
// (PROTOCOL.md, "Party keys and signed statements"). See docs/browser.md.
(function () {
  'use strict'

  // ------------------------------------------------------------------ strict JSON
  // JSON.parse would turn 1.0 into 1 and 2**60 into a float, and keep the last of
  // two equal keys; Python's verifier tells those apart, so this parser does too.
  // Integers: a Number when safe, else a BigInt; other numbers: a Fraction.

  class Fraction { constructor (text) { this.text = text } }
  class JsonError extends Error {}

  function parseJson (text) {
    let at = 0
    const fail = (what) => { throw new JsonError(`${what} at character ${at + 1}`) }
    const space = () => { while (at < text.length && ' \t\n\r'.includes(text[at])) at++ }
    const NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y
    function value (depth) {
      if (depth > 500) fail('nested too deeply')
      space()
      const c = text[at]
      if (c === '{') return object(depth)
      if (c === '[') return array(depth)
      if (c === '"') return string()
      if (text.startsWith('true', at)) { at += 4; return true }
      if (text.startsWith('false', at)) { at += 5; return false }
      if (text.startsWith('null', at)) { at += 4; return null }
      NUMBER.lastIndex = at
      const m = NUMBER.exec(text)
      if (!m) fail(c === undefined ? 'unexpected end of the file' : `unexpected ${JSON.stringify(c)}`)
      at += m[0].length
      if (m[1] || m[2]) return new Fraction(m[0])
      const n = Number(m[0])
      return Number.isSafeInteger(n) ? n : BigInt(m[0])
    }
    function object (depth) {
      const out = Object.create(null)
      at++
      space()
      if (text[at] === '}') { at++; return out }
      for (;;) {
        space()
        if (text[at] !== '"') fail('expected a key in double quotes')
        const key = string()
        if (Object.prototype.hasOwnProperty.call(out, key)) fail(`duplicate key ${pyRepr(key)}`)
        space()
        if (text[at] !== ':') fail("expected ':'")
        at++
        out[key] = value(depth + 1)
        space()
        if (text[at] === ',') { at++; continue }
        if (text[at] === '}') { at++; return out }
        fail("expected ',' or '}'")
      }
    }
    function array (depth) {
      const out = []
      at++
      space()
      if (text[at] === ']') { at++; return out }
      for (;;) {
        out.push(value(depth + 1))
        space()
        if (text[at] === ',') { at++; continue }
        if (text[at] === ']') { at++; return out }
        fail("expected ',' or ']'")
      }
    }
    const ESC = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' }
    function string () {
      at++
      let out = ''
      for (;;) {
        const c = text[at]
        if (c === undefined) fail('unterminated string')
        if (c === '"') { at++; return out }
        if (c < ' ') fail('control character in a string')
        if (c !== '\\') { out += c; at++; continue }
        const e = text[at + 1]
        if (e === 'u') {
          const hex = text.slice(at + 2, at + 6)
          if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail('bad \\u escape')
          out += String.fromCharCode(parseInt(hex, 16))
          at += 6
        } else if (e in ESC) {
          out += ESC[e]
          at += 2
        } else {
          fail('bad escape')
        }
      }
    }
    const result = value(0)
    space()
    if (at < text.length) fail('extra data after the JSON value')
    return result
  }

  // ------------------------------------------------------------------ canonical JSON
  // RFC 8785 for the protocol's values (strings, safe integers, null, lists, objects):
  // keys sorted by UTF-16 code units, no spaces, no ASCII escaping. Anything else
  // throws, as settlement.ledger.canonical_json raises.

  class CanonicalError extends Error {}

  function canonical (v) {
    if (v === null) return 'null'
    if (typeof v === 'string') return str(v)
    if (typeof v === 'number') {
      if (!Number.isSafeInteger(v)) throw new CanonicalError(`${v} is not a safe integer`)
      return String(v) // -0 -> "0"
    }
    if (typeof v === 'bigint') throw new CanonicalError(`${v} exceeds the safe integer range`)
    if (Array.isArray(v)) return '[' + v.map(canonical).join(',') + ']'
    if (isObject(v)) {
      const keys = Object.keys(v).sort() // default sort: UTF-16 code units, as RFC 8785 asks
      return '{' + keys.map((k) => str(k) + ':' + canonical(v[k])).join(',') + '}'
    }
    throw new CanonicalError(`${typeName(v)} is not allowed (str, int, null only)`)
  }
  function str (s) {
    if (!wellFormed(s)) throw new CanonicalError('a string holds a lone surrogate')
    return JSON.stringify(s) // escapes exactly ", \, and U+0000..U+001F as RFC 8785 does
  }
  const wellFormed = (s) => (typeof s.isWellFormed === 'function' ? s.isWellFormed()
    : !/[\ud800-\udbff](?![\udc00-\udfff])|(?:^|[^\ud800-\udbff])[\udc00-\udfff]/.test(s))

  const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Fraction)
  const isInt = (v) => (typeof v === 'number' && Number.isInteger(v)) || typeof v === 'bigint'
  const isStr = (v) => typeof v === 'string'
  const has = (o, k) => Object.prototype.hasOwnProperty.call(o, k)
  function typeName (v) {
    if (v === null || v === undefined) return 'null'
    if (typeof v === 'boolean') return 'a boolean'
    if (isStr(v)) return 'a string'
    if (isInt(v)) return 'an integer'
    if (v instanceof Fraction) return 'a number with a fraction'
    if (Array.isArray(v)) return 'a list'
    return 'an object'
  }
  // Python's repr of a simple string, as the command-line verifier writes keys.
  const pyRepr = (s) => (s.includes("'") && !s.includes('"') ? `"${s}"` : `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`)
  const utf8 = (s) => new TextEncoder().encode(s)
  const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('')
  const B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/
  function b64 (text) {
    if (!isStr(text) || !B64.test(text)) return null
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0))
  }
  const groups = (keyId) => (keyId.match(/.{1,4}/g) || []).join('-')
  async function sha256Hex (bytes) { return hex(await crypto.subtle.digest('SHA-256', bytes)) }
  async function fingerprintOf (raw) { return groups((await sha256Hex(raw)).slice(0, 16)) }

  // ------------------------------------------------------------------ the checks
  const GENESIS = '0'.repeat(64)
  const EVENT_TYPES = ['created', 'joined', 'left', 'proposed', 'disputed', 'accepted']
  const EVENT_FIELDS = [['connection_id', isStr], ['seq', isInt], ['type', isStr], ['party', isStr],
    ['at', isStr], ['prev_hash', isStr], ['hash', isStr]]
  const TYPE_FIELDS = {
    created: [['currency', isStr]],
    proposed: [['amount', isStr], ['version', isInt]],
    disputed: [['version', isInt]],
    accepted: [['amount', isStr], ['version', isInt]]
  }
  const RECEIPT_FIELDS = [['connection_id', isStr], ['currency', isStr], ['amount', isStr],
    ['version', isInt], ['settled_at', isStr], ['events', Array.isArray], ['receipt_id', isStr]]
  const SIGNATURE_MISMATCH = 'signature does not match: the receipt was altered or not issued by this key'
  const STATEMENT_PREFIX = 'settlement/v1.1 statement\n'
  const label = (e) => `event seq ${e.seq} (${e.type})`

  function checkReceiptFields (r) {
    if (!isObject(r)) return `the receipt must be a JSON object, not ${typeName(r)}`
    const known = RECEIPT_FIELDS.map(([k]) => k).concat(['signature'])
    for (const key of Object.keys(r)) if (!known.includes(key)) return `the receipt has an unknown field ${pyRepr(key)}`
    for (const [key, ok] of RECEIPT_FIELDS) {
      if (!has(r, key)) return `the receipt has no ${pyRepr(key)} field`
      if (!ok(r[key])) return `the receipt's ${pyRepr(key)} is ${typeName(r[key])}`
    }
    if (has(r, 'signature')) {
      const s = r.signature
      if (!isObject(s)) return `the receipt's 'signature' is ${typeName(s)}, not an object`
      for (const key of Object.keys(s)) if (!['alg', 'key_id', 'value'].includes(key)) return `the signature has an unknown field ${pyRepr(key)}`
      for (const key of ['alg', 'key_id', 'value']) if (!isStr(s[key])) return `the signature's ${pyRepr(key)} is missing or not a string`
    }
    return null
  }

  function checkEventShape (position, e) {
    if (!isObject(e)) return `event at position ${position} is ${typeName(e)}, not an object`
    for (const [key, ok] of EVENT_FIELDS) {
      if (!ok(e[key])) return `event at position ${position}: ${pyRepr(key)} is ${has(e, key) ? typeName(e[key]) : 'missing'}`
    }
    for (const key of Object.keys(e)) {
      const v = e[key]
      if (v !== null && !isStr(v) && !isInt(v)) return `${label(e)}: ${pyRepr(key)} is ${typeName(v)}`
    }
    if (!EVENT_TYPES.includes(e.type)) return `${label(e)} has an unknown type`
    for (const [key, ok] of TYPE_FIELDS[e.type] || []) {
      if (!ok(e[key])) return `${label(e)}: ${pyRepr(key)} is ${has(e, key) ? typeName(e[key]) : 'missing'}`
    }
    return null
  }

  function checkSequence (events) {
    const seen = new Set()
    for (let i = 0; i < events.length; i++) {
      const position = i + 1
      const seq = events[i].seq
      if (seq === position) { seen.add(String(seq)); continue }
      if (seen.has(String(seq))) return `event ${seq} appears more than once`
      const later = new Set(events.slice(position).map((e) => String(e.seq)))
      if (later.has(String(position)) || seq < position) return `event ${seq} is out of order (position ${position} should hold seq ${position})`
      return `event with seq ${position} is missing`
    }
    return null
  }

  async function eventHash (e) {
    const unhashed = Object.create(null)
    for (const key of Object.keys(e)) if (key !== 'hash') unhashed[key] = e[key]
    const prefix = utf8(e.prev_hash)
    const body = utf8(canonical(unhashed))
    const all = new Uint8Array(prefix.length + body.length)
    all.set(prefix)
    all.set(body, prefix.length)
    return sha256Hex(all)
  }

  async function checkLinks (events) {
    let expected = GENESIS
    for (const e of events) {
      if (e.prev_hash !== expected) {
        return expected === GENESIS ? `${label(e)}: prev_hash is not the genesis hash (64 zeros)`
          : `${label(e)}: prev_hash does not match the previous event's hash`
      }
      let recomputed
      try { recomputed = await eventHash(e) } catch (err) {
        if (err instanceof CanonicalError) return `${label(e)}: its contents cannot be put in canonical form`
        throw err
      }
      if (e.hash !== recomputed) return `${label(e)}: hash does not match its contents`
      expected = e.hash
    }
    return null
  }

  async function verifyChain (events) {
    if (!Array.isArray(events) || events.length === 0) return 'the receipt has no events'
    for (let i = 0; i < events.length; i++) {
      const fault = checkEventShape(i + 1, events[i])
      if (fault) return fault
    }
    return checkSequence(events) || checkLinks(events)
  }

  function checkFields (r) {
    const events = r.events
    for (const e of events) {
      if (e.connection_id !== r.connection_id) return `${label(e)} belongs to connection ${e.connection_id}, not the receipt's ${r.connection_id}`
    }
    const first = events[0]
    if (first.type !== 'created') return `the first event is ${first.type}, not created`
    for (const e of events.slice(1)) if (e.type === 'created') return `${label(e)}: a connection is created only once`
    if (r.currency !== first.currency) return `receipt currency ${r.currency} does not match the created event's ${first.currency}`
    const accepted = events.filter((e) => e.type === 'accepted')
    if (accepted.length === 0) return 'the receipt has no accepted event'
    if (accepted.length > 1) return `${label(accepted[1])}: a connection is settled only once`
    const last = events[events.length - 1]
    if (last !== accepted[0]) return `${label(last)} comes after the accepted event`
    for (const [field, source] of [['amount', 'amount'], ['version', 'version'], ['settled_at', 'at']]) {
      if (r[field] !== last[source]) return `receipt ${field} ${r[field]} does not match the accepted event's ${last[source]}`
    }
    if (r.receipt_id !== last.hash) return "receipt_id does not match the accepted event's hash"
    const proposals = events.filter((e) => e.type === 'proposed')
    if (proposals.length === 0) return 'the accepted event has no proposal before it'
    const offer = proposals[proposals.length - 1]
    if (last.version !== offer.version) return `the accepted version ${last.version} is not the last proposed version ${offer.version}`
    if (last.amount !== offer.amount) return `the accepted amount ${last.amount} is not the proposed amount ${offer.amount} of version ${offer.version}`
    return null
  }

  async function importKey (raw) {
    return crypto.subtle.importKey('raw', raw, { name: 'Ed25519' }, false, ['verify'])
  }
  const ed25519Verify = (key, sig, data) => crypto.subtle.verify({ name: 'Ed25519' }, key, sig, data)
  class Unsupported extends Error {}
  async function importOrUnsupported (raw) {
    try { return await importKey(raw) } catch (err) {
      if (err && err.name === 'NotSupportedError') throw new Unsupported('Ed25519')
      return null // not a usable key
    }
  }

  async function checkServerSignature (r, keys) {
    const s = r.signature
    if (!s) return 'the receipt is not signed'
    if (s.alg !== 'ed25519') return `the signature algorithm ${pyRepr(s.alg)} is not ed25519`
    const raw = keys ? b64(keys[s.key_id]) : null
    if (!raw) return `the receipt is signed by key ${s.key_id}, which is not one of this server's keys (/api/keys)`
    const value = b64(s.value)
    if (!value || value.length !== 64) return 'the signature value is not base64 of a 64-byte Ed25519 signature'
    const key = await importOrUnsupported(raw)
    const unsigned = Object.create(null)
    for (const k of Object.keys(r)) if (k !== 'signature') unsigned[k] = r[k]
    if (!key || !(await ed25519Verify(key, value, utf8(canonical(unsigned))))) return SIGNATURE_MISMATCH
    return null
  }

  // Party signatures (1.1), as settlement/consent.py's `party_signatures` checks them, in
  // one pass: each proposed/disputed/accepted statement against the key of its party's
  // seat as it was then (the last created/joined of that party before it); an answer's
  // statement names the offer current when it was given (the last proposed before it).
  const KEY_B64 = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/ // canonical base64 of 32 bytes
  const SIG_B64 = /^[A-Za-z0-9+/]{85}[AQgw]==$/ // and of 64 bytes
  const exact = (value, re) => (isStr(value) && re.test(value) ? b64(value) : null)
  const STATEMENT_TYPES = ['proposed', 'disputed', 'accepted']

  function statementOf (e, currency, offer) {
    if (e.type === 'proposed') {
      return { type: 'proposed', connection_id: e.connection_id, currency, amount: e.amount, version: e.version }
    }
    if (!offer) return null
    const statement = { type: e.type, connection_id: e.connection_id, currency, amount: offer.amount, version: offer.version, offer_hash: offer.hash }
    if (e.type === 'disputed') statement.reason = has(e, 'reason') ? e.reason : null
    return statement
  }

  async function verifies (keyText, signature, statement) {
    const raw = exact(keyText, KEY_B64)
    const sig = exact(signature, SIG_B64)
    if (!raw || !sig) return false
    const key = await importOrUnsupported(raw)
    if (!key) return false
    let bytes
    try { bytes = utf8(STATEMENT_PREFIX + canonical(statement)) } catch (err) {
      if (err instanceof CanonicalError) return false
      throw err
    }
    return ed25519Verify(key, sig, bytes)
  }

  async function checkPartySignatures (r, statements) {
    const keys = new Map([['A', null], ['B', null]])
    let currency = ''
    let offer = null
    for (const e of r.events) {
      if (e.type === 'created' || e.type === 'joined') {
        const key = has(e, 'public_key') ? e.public_key : null
        if (key !== null && !exact(key, KEY_B64)) return `${label(e)}: public_key is not base64 of an Ed25519 key`
        keys.set(e.party, key)
        if (e.type === 'created') currency = e.currency
        continue
      }
      if (!STATEMENT_TYPES.includes(e.type)) continue
      const key = keys.get(e.party) ?? null
      const signature = has(e, 'signature') ? e.signature : null
      const statement = statementOf(e, currency, offer)
      if (e.type === 'proposed') offer = e
      const keyId = key === null ? null : (await sha256Hex(b64(key))).slice(0, 16)
      const what = e.type === 'proposed' ? `Party ${e.party}'s offer, version ${e.version}`
        : `Party ${e.party}'s ${e.type === 'accepted' ? 'acceptance' : 'dispute'} of version ${e.version}`
      statements.push({ what, signed: signature !== null, fingerprint: keyId && groups(keyId) })
      if (signature === null) continue
      if (key === null) return `${label(e)} is signed, but Party ${e.party}'s seat had no key`
      if (!statement || !(await verifies(key, signature, statement))) {
        return `${label(e)}: Party ${e.party}'s signature does not verify with key ${keyId} (the statement was altered or not signed by that seat)`
      }
    }
    return null
  }

  // The whole verdict for a file's text. `keys`: key_id -> base64 public key, or null
  // when the server's keys could not be fetched.
  async function verifyText (text, keys) {
    const checks = [
      { id: 'json', name: 'The file is a receipt (one JSON object with the receipt fields)' },
      { id: 'chain', name: 'Hash chain intact' },
      { id: 'fields', name: 'Fields agree with the events' },
      { id: 'parties', name: 'Party signatures' },
      { id: 'server', name: "Server's signature" }
    ]
    const result = { checks, fault: null, statements: [], receipt: null, unsupported: false }
    const step = async (id, run) => {
      const check = checks.find((c) => c.id === id)
      if (result.fault) { check.state = 'unchecked'; return }
      try {
        const fault = await run(check)
        if (fault) { check.state = 'fail'; check.detail = fault; result.fault = fault } else if (!check.state) check.state = 'pass'
      } catch (err) {
        if (!(err instanceof Unsupported)) throw err
        check.state = 'skipped'
        check.detail = 'not checked: this browser cannot check Ed25519 signatures (WebCrypto)'
        result.unsupported = true
      }
    }
    let receipt
    await step('json', () => {
      try { receipt = parseJson(text) } catch (err) {
        if (err instanceof JsonError) return `the file is not valid JSON: ${err.message}`
        throw err
      }
      return checkReceiptFields(receipt)
    })
    result.receipt = receipt
    await step('chain', async (check) => {
      const fault = await verifyChain(receipt.events)
      if (!fault) check.detail = `${receipt.events.length} events, from the genesis hash to the acceptance`
      return fault
    })
    await step('fields', (check) => {
      const fault = checkFields(receipt)
      if (!fault) check.detail = `${receipt.amount} ${receipt.currency}, version ${receipt.version}, receipt ID ${receipt.receipt_id.slice(0, 12)}…`
      return fault
    })
    await step('parties', async (check) => {
      const fault = await checkPartySignatures(receipt, result.statements)
      if (!fault) {
        const signed = result.statements.filter((s) => s.signed).length
        check.detail = signed ? `${signed} of ${result.statements.length} statements signed by the parties, every signature valid`
          : 'no statement is signed by a party (a version 1 receipt, or parties without keys)'
      }
      return fault
    })
    await step('server', async (check) => {
      if (!keys) { check.state = 'skipped'; check.detail = "not checked: the server's keys (/api/keys) could not be fetched"; return null }
      const fault = await checkServerSignature(receipt, keys)
      if (!fault) check.detail = `signed with key ${groups(receipt.signature.key_id)}, one of this server's keys`
      return fault
    })
    return result
  }

  window.SettlementVerify = { parseJson, canonical, verifyText, Fraction }

  // ------------------------------------------------------------------ the page
  const input = document.getElementById('receipt-file')
  if (!input) return
  const zone = document.getElementById('dropzone')
  const keysNote = document.getElementById('keys-note')
  let keys = null

  async function loadKeys () {
    try {
      const response = await fetch('/api/keys', { cache: 'no-store', credentials: 'omit' })
      if (!response.ok) throw new Error(String(response.status))
      const doc = await response.json()
      keys = {}
      for (const k of (doc && doc.keys) || []) if (k && k.alg === 'ed25519') keys[k.key_id] = k.public_key
    } catch (e) {
      keys = null
      keysNote.textContent = "The server's public keys could not be fetched, so the server's signature will not be checked."
    }
  }
  const keysReady = loadKeys()

  const MAX_BYTES = 5 * 1024 * 1024
  const el = (tag, cls, text) => {
    const node = document.createElement(tag)
    if (cls) node.className = cls
    if (text !== undefined) node.textContent = text
    return node
  }
  const MARK = { pass: '✓', fail: '✗', skipped: '–', unchecked: '·' }
  const WORD = { pass: 'passed', fail: 'failed', skipped: 'not checked', unchecked: 'not reached' }

  function show (name, result) {
    const verdict = document.getElementById('verdict')
    const line = document.getElementById('verdict-line')
    const fault = document.getElementById('verdict-fault')
    const list = document.getElementById('checks')
    const statements = document.getElementById('statements')
    verdict.hidden = false
    verdict.classList.remove('is-valid', 'is-invalid', 'is-partial')
    list.replaceChildren()
    statements.replaceChildren()
    if (result.fault) {
      verdict.classList.add('is-invalid')
      line.textContent = `Not valid: ${name} was refused.`
      fault.textContent = `First fault: ${result.fault}.`
    } else if (result.checks.some((c) => c.state === 'skipped')) {
      verdict.classList.add('is-partial')
      line.textContent = `${name}: the chain and every field agree, but not every signature could be checked.`
      fault.textContent = result.unsupported ? 'This browser cannot check Ed25519 signatures; use python -m settlement verify, or a current Chromium, Firefox or Safari.' : ''
    } else {
      const r = result.receipt
      verdict.classList.add('is-valid')
      line.textContent = `Valid: ${name} is receipt ${r.receipt_id.slice(0, 12)} for ${r.amount} ${r.currency} (connection ${r.connection_id}).`
      fault.textContent = ''
    }
    for (const c of result.checks) {
      const item = el('li', `check check-${c.state}`)
      item.append(el('span', 'check-mark', MARK[c.state]), ' ')
      item.append(el('span', 'check-name', c.name), ': ', el('span', 'check-state', WORD[c.state]))
      if (c.detail) item.append(el('span', 'check-detail', ` (${c.detail})`))
      list.append(item)
    }
    for (const s of result.statements) {
      statements.append(el('li', s.signed ? 'is-signed' : 'not-signed',
        s.signed ? `${s.what}: signed with key ${s.fingerprint}` : `${s.what}: not signed`))
    }
    if (!result.statements.length) statements.append(el('li', '', result.fault ? 'Not checked.' : 'None in this receipt.'))
    document.getElementById('verdict-h').focus()
  }

  async function check (file) {
    if (!file) return
    let result
    if (file.size > MAX_BYTES) {
      result = { checks: [], fault: 'the file is larger than 5 MB, far more than any receipt', statements: [] }
    } else {
      let text = null
      try {
        text = new TextDecoder('utf-8', { fatal: true }).decode(await file.arrayBuffer())
      } catch (e) {
        result = { checks: [], fault: 'the file is not UTF-8 text', statements: [] }
      }
      if (text !== null) {
        if (!window.crypto || !crypto.subtle) {
          result = { checks: [], fault: 'this page cannot compute hashes here (WebCrypto needs HTTPS)', statements: [] }
        } else {
          await keysReady
          result = await verifyText(text, keys)
        }
      }
    }
    show(file.name, result)
  }

  input.addEventListener('change', () => { check(input.files[0]) })
  // Dropping a file anywhere must not open it in place of the page.
  document.addEventListener('dragover', (ev) => { ev.preventDefault() })
  document.addEventListener('drop', (ev) => { ev.preventDefault() })
  zone.addEventListener('dragenter', () => zone.classList.add('is-over'))
  zone.addEventListener('dragleave', () => zone.classList.remove('is-over'))
  zone.addEventListener('drop', (ev) => {
    zone.classList.remove('is-over')
    const file = ev.dataTransfer && ev.dataTransfer.files[0]
    if (file) check(file)
  })
})()
