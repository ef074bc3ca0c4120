// Signed consent for the pages (protocol 1.1, "Party keys and signed statements").
//
// Each seat this browser takes gets its own Ed25519 key, made here with WebCrypto
// (the private key is not extractable) and kept in IndexedDB under the
// connection id and party, so a reload and a second tab of the same seat go on
// signing with it. `propose` and `respond` then carry the party's signature of
// the statement the protocol defines. A browser without Ed25519 in WebCrypto
// sends no key: its seat is unsigned and everything else works as before.
//
// API (window.SettlementConsent), all promise-returning unless noted:
//   attach(socket, connectionId, partyFn)  the page's socket; partyFn() -> 'A' | 'B' | undefined
//   prepare(command, payload) -> kept      adds public_key / version / signature to the
//                                          payload in place; call kept(ack) after a
//                                          successful ack (it stores or forgets the key)
//   supported()                            whether this browser can sign (Ed25519)
//   publicKeyFor(cid, party)               base64 public key of the stored seat key, or null
//   sign(cid, party, statement)            base64 signature of the statement, or null
//   forget(cid, party)                     drop the stored key (after `leave`)
//   statementBytes(statement)              (sync) the exact bytes signed, a Uint8Array
//   normaliseAmount(raw, currency)         (sync) the server's normal form, or null if refused
//   spoken(keyId)                          (sync) '3f9a0c41b2d7e815' -> '3f9a-0c41-b2d7-e815'
//   keyIdOf(publicKeyBase64)               the fingerprint (16 hex characters)
// See docs/consent.md.
(function () {
  'use strict'
  const PREFIX = 'settlement/v1.1 statement\n'
  const ALG = { name: 'Ed25519' }
  // ISO 4217 minor units, exactly settlement.money's table (a test compares them).
  const EXPONENTS = {
    AED: 2, AFN: 2, ALL: 2, AMD: 2, AOA: 2, ARS: 2, AUD: 2, AWG: 2, AZN: 2, BAM: 2, BBD: 2, BDT: 2, BHD: 3,
    BIF: 0, BMD: 2, BND: 2, BOB: 2, BOV: 2, BRL: 2, BSD: 2, BTN: 2, BWP: 2, BYN: 2, BZD: 2, CAD: 2, CDF: 2,
    CHE: 2, CHF: 2, CHW: 2, CLF: 4, CLP: 0, CNY: 2, COP: 2, COU: 2, CRC: 2, CUP: 2, CVE: 2, CZK: 2, DJF: 0,
    DKK: 2, DOP: 2, DZD: 2, EGP: 2, ERN: 2, ETB: 2, EUR: 2, FJD: 2, FKP: 2, GBP: 2, GEL: 2, GHS: 2, GIP: 2,
    GMD: 2, GNF: 0, GTQ: 2, GYD: 2, HKD: 2, HNL: 2, HTG: 2, HUF: 2, IDR: 2, ILS: 2, INR: 2, IQD: 3, IRR: 2,
    ISK: 0, JMD: 2, JOD: 3, JPY: 0, KES: 2, KGS: 2, KHR: 2, KMF: 0, KPW: 2, KRW: 0, KWD: 3, KYD: 2, KZT: 2,
    LAK: 2, LBP: 2, LKR: 2, LRD: 2, LSL: 2, LYD: 3, MAD: 2, MDL: 2, MGA: 2, MKD: 2, MMK: 2, MNT: 2, MOP: 2,
    MRU: 2, MUR: 2, MVR: 2, MWK: 2, MXN: 2, MXV: 2, MYR: 2, MZN: 2, NAD: 2, NGN: 2, NIO: 2, NOK: 2, NPR: 2,
    NZD: 2, OMR: 3, PAB: 2, PEN: 2, PGK: 2, PHP: 2, PKR: 2, PLN: 2, PYG: 0, QAR: 2, RON: 2, RSD: 2, RUB: 2,
    RWF: 0, SAR: 2, SBD: 2, SCR: 2, SDG: 2, SEK: 2, SGD: 2, SHP: 2, SLE: 2, SOS: 2, SRD: 2, SSP: 2, STN: 2,
    SVC: 2, SYP: 2, SZL: 2, THB: 2, TJS: 2, TMT: 2, TND: 3, TOP: 2, TRY: 2, TTD: 2, TWD: 2, TZS: 2, UAH: 2,
    UGX: 0, USD: 2, USN: 2, UYI: 0, UYU: 2, UYW: 4, UZS: 2, VED: 2, VES: 2, VND: 0, VUV: 0, WST: 2, XAD: 2,
    XAF: 0, XCD: 2, XCG: 2, XOF: 0, XPF: 0, YER: 2, ZAR: 2, ZMW: 2, ZWG: 2
  }

  // -- the server's rules, in JavaScript -----------------------------------------

  // settlement.money: ASCII digits with an optional fraction, at most 40
  // characters, no more fraction digits than the currency has, not zero; the
  // normal form has exactly the currency's minor unit. (The maximum is the
  // server's setting; above it the server refuses the amount anyway.)
  function normaliseAmount (raw, currency) {
    if (typeof raw !== 'string' || raw.length > 40 || !/^[0-9]+(\.[0-9]+)?$/.test(raw)) return null
    if (!Object.prototype.hasOwnProperty.call(EXPONENTS, currency)) return null
    const exponent = EXPONENTS[currency]
    const [whole, fraction = ''] = raw.split('.')
    if (fraction.length > exponent) return null
    if (!/[1-9]/.test(raw)) return null // zero
    const units = whole.replace(/^0+(?=[0-9])/, '')
    return exponent ? units + '.' + fraction.padEnd(exponent, '0') : units
  }

  // RFC 8785 for the statement's values (strings, safe integers, null, objects):
  // keys sorted by UTF-16 code units, JSON.stringify's string and number forms.
  function canonical (value) {
    if (value === null || typeof value !== 'object') return JSON.stringify(value)
    if (Array.isArray(value)) return '[' + value.map(canonical).join(',') + ']'
    const keys = Object.keys(value).sort()
    return '{' + keys.map((k) => JSON.stringify(k) + ':' + canonical(value[k])).join(',') + '}'
  }
  const statementBytes = (statement) => new TextEncoder().encode(PREFIX + canonical(statement))

  const b64 = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)))
  const unb64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0))
  const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('')
  const spoken = (keyId) => ((keyId || '').match(/.{1,4}/g) || []).join('-')
  async function keyIdOf (publicKey) {
    return hex(await crypto.subtle.digest('SHA-256', unb64(publicKey))).slice(0, 16)
  }
  // `K7QF-3MZP-XW2D` in any case, with or without hyphens -> the canonical form.
  const normId = (cid) => String(cid || '').toUpperCase().replace(/[^0-9A-Z]/g, '').replace(/(.{4})(?=.)/g, '$1-')

  // -- keys in IndexedDB ---------------------------------------------------------------

  let supportedP = null
  function supported () {
    if (!supportedP) {
      supportedP = (async () => {
        try {
          await crypto.subtle.generateKey(ALG, false, ['sign', 'verify'])
          return true
        } catch (e) { return false }
      })()
    }
    return supportedP
  }

  let dbP = null
  function db () {
    if (!dbP) {
      dbP = new Promise((resolve, reject) => {
        const open = indexedDB.open('settlement-consent', 1)
        open.onupgradeneeded = () => open.result.createObjectStore('keys')
        open.onsuccess = () => resolve(open.result)
        open.onerror = () => reject(open.error)
      })
    }
    return dbP
  }
  async function store (mode, fn) {
    const tx = (await db()).transaction('keys', mode)
    const request = fn(tx.objectStore('keys'))
    return new Promise((resolve, reject) => {
      tx.oncomplete = () => resolve(request.result)
      tx.onerror = tx.onabort = () => reject(tx.error)
    })
  }
  const slot = (cid, party) => normId(cid) + ':' + party
  const load = (cid, party) => store('readonly', (s) => s.get(slot(cid, party))).catch(() => undefined)
  const forget = (cid, party) => store('readwrite', (s) => s.delete(slot(cid, party))).catch(() => undefined)

  async function newKey () {
    if (!(await supported())) return null
    const pair = await crypto.subtle.generateKey(ALG, false, ['sign', 'verify'])
    const publicKey = b64(await crypto.subtle.exportKey('raw', pair.publicKey))
    return { privateKey: pair.privateKey, publicKey, keyId: await keyIdOf(publicKey) }
  }
  async function publicKeyFor (cid, party) {
    const record = await load(cid, party)
    return record ? record.publicKey : null
  }
  async function sign (cid, party, statement) {
    const record = await load(cid, party)
    if (!record) return null
    return b64(await crypto.subtle.sign(ALG, record.privateKey, statementBytes(statement)))
  }

  // -- the page: history, statements, fingerprints -------------------------------------

  const page = { socket: null, cid: null, party: () => undefined, events: [] }
  const emit = (event, payload) => new Promise((resolve, reject) => {
    page.socket.timeout(8000).emit(event, payload, (err, ack) => (err ? reject(err) : resolve(ack)))
  })
  const lastSeq = () => (page.events.length ? page.events[page.events.length - 1].seq : 0)
  async function history () {
    for (;;) {
      const ack = await emit('history', { after_seq: lastSeq() })
      if (!ack || !ack.ok) return page.events
      // Two reads may overlap (a redraw and a command): keep each event once, in order.
      for (const e of ack.events) if (e.seq === lastSeq() + 1) page.events.push(e)
      if (!ack.more || !ack.events.length) return page.events
    }
  }
  // The room as the log says: currency, offers by version, each seat's current key.
  function room (events) {
    const out = { cid: null, currency: null, offers: {}, last: null, keys: { A: null, B: null }, accepted: null }
    for (const e of events) {
      out.cid = e.connection_id
      if (e.type === 'created') out.currency = e.currency
      if (e.type === 'created' || e.type === 'joined') out.keys[e.party] = e.public_key || null
      if (e.type === 'left') out.keys[e.party] = null
      if (e.type === 'proposed') { out.offers[e.version] = e; out.last = e }
      if (e.type === 'accepted') out.accepted = e
    }
    return out
  }
  async function statementFor (command, payload, r) {
    if (command === 'propose') {
      const amount = normaliseAmount(payload.amount, r.currency)
      if (amount === null) return null // the server says what is wrong with it
      payload.version = (r.last ? r.last.version : 0) + 1
      return { type: 'proposed', connection_id: r.cid, currency: r.currency, amount, version: payload.version }
    }
    const offer = r.offers[payload.version]
    if (!offer) return null
    const statement = {
      type: payload.decision === 'accept' ? 'accepted' : 'disputed',
      connection_id: r.cid,
      currency: r.currency,
      amount: offer.amount,
      version: offer.version,
      offer_hash: offer.hash
    }
    if (payload.decision !== 'accept') statement.reason = typeof payload.reason === 'string' ? payload.reason : null
    return statement
  }

  async function prepare (command, payload) {
    try {
      if (command === 'create' || command === 'join') {
        const key = await newKey()
        if (!key) return null
        payload.public_key = key.publicKey
        return (ack) => (ack && ack.ok
          ? store('readwrite', (s) => s.put(key, slot(ack.connection_id, ack.party))).catch(() => undefined)
          : null)
      }
      const party = page.party()
      if (command === 'leave') return () => forget(page.cid, party)
      if ((command !== 'propose' && command !== 'respond') || !party) return null
      const record = await load(page.cid, party)
      if (!record) return null
      const r = room(await history())
      // Sign only for the key the seat holds now (not one left behind by an earlier seat).
      if (r.keys[party] !== record.publicKey) return null
      const statement = await statementFor(command, payload, r)
      if (statement) payload.signature = await sign(page.cid, party, statement)
    } catch (e) { /* unsigned: the server answers signature_required if the seat has a key */ }
    return null
  }

  function panel () {
    let el = document.getElementById('consent-keys')
    if (!el) {
      el = document.createElement('section')
      el.id = 'consent-keys'
      el.className = 'card consent'
      el.setAttribute('aria-labelledby', 'consent-h')
      el.innerHTML = '<h2 id="consent-h">Signatures</h2><p class="consent-me"></p>' +
        '<p class="consent-other"></p><p class="hint consent-how"></p>'
      const anchor = document.getElementById('controls') || document.querySelector('main > section')
      if (anchor) anchor.after(el)
      else document.querySelector('main').append(el)
    }
    return el
  }
  async function redraw () {
    const party = page.party()
    if (!party || !page.socket) return
    const r = room(await history())
    const other = party === 'A' ? 'B' : 'A'
    const mine = r.keys[party]
    const record = await load(page.cid, party)
    const el = panel()
    const can = await supported()
    el.querySelector('.consent-me').textContent = mine
      ? `Your key (Party ${party}): ${spoken(await keyIdOf(mine))}` +
        (record && record.publicKey === mine ? '' : ' — but this browser does not hold it, so your answers cannot be signed here (leave and join again for a new key).')
      : (can ? `Your seat (Party ${party}) has no key: your answers go unsigned.`
          : 'This browser cannot sign (no Ed25519 in WebCrypto): your answers go unsigned.')
    el.querySelector('.consent-other').textContent = r.keys[other]
      ? `Party ${other}'s key: ${spoken(await keyIdOf(r.keys[other]))}`
      : `Party ${other} has no key${r.keys[other] === null ? ' (unsigned, or not seated yet)' : ''}.`
    el.querySelector('.consent-how').textContent =
      'To be sure nobody stands between you, read your key to the other party by phone or in person; it must match what their page shows as yours.'
    const final = document.getElementById('final')
    if (r.accepted && final && !final.hidden) {
      let line = document.getElementById('consent-final')
      if (!line) {
        line = document.createElement('p')
        line.id = 'consent-final'
        final.append(line)
      }
      const agreed = r.offers[r.accepted.version]
      const offerSigned = Boolean(agreed && agreed.signature)
      const acceptSigned = Boolean(r.accepted.signature)
      line.textContent = offerSigned && acceptSigned
        ? 'Both statements are signed: Party A signed the offer and Party B signed the acceptance.'
        : `Not both statements are signed: the offer is ${offerSigned ? '' : 'un'}signed, the acceptance is ${acceptSigned ? '' : 'un'}signed.`
    }
  }
  let pending = null
  function schedule () {
    if (pending) return
    pending = setTimeout(() => { pending = null; redraw().catch(() => undefined) }, 150)
  }
  function attach (socket, connectionId, partyFn) {
    page.socket = socket
    page.cid = connectionId ? normId(connectionId) : null
    page.party = partyFn || (() => undefined)
    if (page.cid) socket.on('html', schedule)
  }

  window.SettlementConsent = {
    attach, prepare, supported, publicKeyFor, sign, forget, statementBytes, normaliseAmount, spoken, keyIdOf
  }
})()
