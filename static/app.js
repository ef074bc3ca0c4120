// Settlement page glue: Socket.IO <-> htmx 2.x. No framework, no build step.
// Forms marked data-command="<event>" are emitted as protocol commands (fields as
// the payload, a fresh request_id); an error ack is shown in the form's
// .field-error; `html` events carry hx-swap-oob fragments swapped with htmx.swap.
// See docs/browser.md.
(function () {
  'use strict'
  const $ = (sel) => document.querySelector(sel)
  const body = document.body
  const connId = body.dataset.connectionId || null
  const seatKey = (id) => 'settlement.seat.' + id
  const loadSeat = (id) => {
    try { return JSON.parse(sessionStorage.getItem(seatKey(id)) || 'null') } catch (e) { return null }
  }
  const forgetSeat = (id) => sessionStorage.removeItem(seatKey(id))
  const saveSeat = (ack) => sessionStorage.setItem(seatKey(ack.connection_id),
    JSON.stringify({ party: ack.party, token: ack.token }))
  const requestId = () => Array.from(crypto.getRandomValues(new Uint8Array(16)),
    (b) => b.toString(16).padStart(2, '0')).join('')

  const seat = connId ? loadSeat(connId) : null
  if (seat) body.classList.add('resuming')
  const invite = $('[data-invite]')
  if (invite && connId) invite.value = new URL('/c/' + connId, location.href).href

  const auth = { view: 'html' }
  if (seat) Object.assign(auth, { connection_id: connId, token: seat.token })
  else if (connId) auth.connection_id = connId // no seat: follow the room live
  const socket = io('/settlement', { auth })
  // [consent 1.1] static/consent.js signs this seat's commands (see docs/consent.md).
  const consent = window.SettlementConsent
  if (consent) consent.attach(socket, connId, () => (loadSeat(connId) || {}).party)

  // Connection notice: visible while the link is down; Socket.IO reconnects by
  // itself and resends `auth`, and the server then redraws the page in full.
  const notice = $('#conn-notice')
  const LOST = 'Connection lost. Reconnecting… What you see may be out of date.'
  const UNAVAILABLE = 'The service is briefly unavailable. Trying again… What you see may be out of date.'
  let connected = false
  let storeDown = false // the last connect was refused `unavailable`; a retry is due
  let clearing = null
  const showNotice = (text) => { notice.textContent = text; notice.hidden = !text }
  const storeBack = () => { clearTimeout(clearing); storeDown = false; showNotice('') }
  socket.on('connect', () => {
    connected = true
    // After a refused connect, wait a moment for another refusal before saying all is well.
    if (storeDown) clearing = setTimeout(storeBack, 1000)
    else showNotice('')
  })
  socket.on('disconnect', (reason) => {
    if (!storeDown) showNotice(LOST)
    if (reason === 'io server disconnect') socket.connect()
  })
  socket.on('connect_error', () => {
    showNotice(connected ? LOST : 'Connecting to the server…')
  })

  // Server-rendered fragments. A fragment carrying data-key is swapped only when
  // its key changes, so the forms (and what the user is typing) stay in place.
  document.addEventListener('htmx:oobBeforeSwap', (ev) => {
    const next = ev.detail.fragment && ev.detail.fragment.firstElementChild
    const key = next && next.getAttribute('data-key')
    if (key && key === ev.detail.target.getAttribute('data-key')) ev.detail.shouldSwap = false
  })
  let lastSeq = -1
  socket.on('html', (msg) => {
    if (!connId || !msg || typeof msg.html !== 'string' || msg.seq < lastSeq) return
    lastSeq = msg.seq
    if (storeDown) storeBack()
    htmx.swap(body, msg.html, { swapStyle: 'none' })
    body.classList.remove('resuming')
    if (connId && $('#controls[data-audience="none"]')) forgetSeat(connId)
  })
  socket.on('error', (err) => {
    if (connId && err && err.code === 'bad_token') { forgetSeat(connId); location.reload() }
    // The store was down when this socket connected, so it is neither seated nor
    // following the room: say so, and connect again (auth and all) shortly.
    if (err && err.code === 'unavailable') {
      clearTimeout(clearing)
      storeDown = true
      showNotice(UNAVAILABLE)
      setTimeout(() => { socket.disconnect(); socket.connect() }, 3000)
    }
  })

  function describe(ack) {
    const error = (ack && ack.error) || {}
    let text = error.message || 'Something went wrong. Please try again.'
    const offer = ack && ack.state && ack.state.offer
    if (error.code === 'stale_offer' && offer) {
      text += ` Party A changed the offer: it is now ${offer.amount} ${ack.state.currency}` +
        ` (version ${offer.version}). Your answer was not recorded; read the new amount and answer again.`
    }
    return text
  }
  const showError = (form, text) => {
    const out = form.querySelector('.field-error')
    if (out) out.textContent = text
  }

  function payloadOf(form, submitter) {
    const data = submitter && submitter.name ? new FormData(form, submitter) : new FormData(form)
    const payload = Object.fromEntries(data)
    form.querySelectorAll('[name]').forEach((el) => {
      const name = el.name
      if (!(name in payload)) return
      if (el.dataset.type === 'int') payload[name] = Number.parseInt(payload[name], 10)
      const onlyFor = el.dataset.onlyFor
      if (onlyFor && (onlyFor !== payload.decision || payload[name] === '')) delete payload[name]
    })
    return payload
  }

  const after = {
    create: (ack) => { saveSeat(ack); location.assign('/c/' + encodeURIComponent(ack.connection_id)) },
    join: (ack) => {
      saveSeat(ack)
      if (ack.connection_id !== connId) return location.assign('/c/' + encodeURIComponent(ack.connection_id))
      // Joined from the invite page: the server now sends this seat's fragments;
      // reconnects resume the seat. Reload if the redraw does not come.
      Object.assign(socket.auth, { connection_id: connId, token: ack.token })
      setTimeout(() => { if ($('#controls[data-audience="none"]')) location.reload() }, 3000)
    },
    leave: () => { forgetSeat(connId); location.assign('/?left=' + encodeURIComponent(connId)) },
    respond: (ack, form, payload) => {
      if (payload.decision === 'dispute') form.querySelector('textarea[name="reason"]').value = ''
    }
  }

  document.addEventListener('submit', (ev) => {
    const form = ev.target.closest('form[data-command]')
    if (!form) return
    ev.preventDefault()
    const submitter = ev.submitter
    if (form.getAttribute('aria-busy') === 'true') return
    if (submitter && submitter.getAttribute('aria-disabled') === 'true') return
    const command = form.dataset.command
    const payload = payloadOf(form, submitter)
    payload.request_id = requestId()
    form.setAttribute('aria-busy', 'true')
    // [consent 1.1] prepare() adds public_key / version / signature; kept(ack) stores
    // or forgets the seat's key before the page moves on.
    const signing = consent ? consent.prepare(command, payload) : Promise.resolve(null)
    signing.then((kept) => socket.timeout(15000).emit(command, payload, async (timeout, ack) => {
      form.removeAttribute('aria-busy')
      if (timeout) return showError(form, 'The server did not answer in time. Check your connection and try again.')
      if (!ack || !ack.ok) return showError(form, describe(ack))
      showError(form, '')
      if (kept) await kept(ack)
      if (after[command]) after[command](ack, form, payload)
    }))
  })

  async function downloadReceipt () {
    const out = $('#receipt-error')
    const mine = loadSeat(connId)
    try {
      if (!mine) throw new Error('Only a seated party can download the receipt.')
      const response = await fetch('/api/connections/' + encodeURIComponent(connId) + '/receipt',
        { headers: { Authorization: 'Bearer ' + mine.token }, cache: 'no-store' })
      if (!response.ok) {
        const body = await response.json().catch(() => null)
        const said = body && body.error && body.error.message
        throw new Error(said || `The server could not give the receipt (HTTP ${response.status}).`)
      }
      const link = document.createElement('a')
      link.href = URL.createObjectURL(await response.blob())
      link.download = `receipt-${connId}.json`
      document.body.append(link)
      link.click()
      link.remove()
      setTimeout(() => URL.revokeObjectURL(link.href), 10000)
      if (out) out.textContent = ''
    } catch (e) {
      if (out) out.textContent = e.message
    }
  }

  document.addEventListener('click', (ev) => {
    const copy = ev.target.closest('[data-copy]')
    if (copy) {
      const field = $(copy.dataset.copy)
      const note = $('#copy-note')
      field.select()
      const done = navigator.clipboard ? navigator.clipboard.writeText(field.value)
        : Promise.resolve(document.execCommand('copy'))
      done.then(() => { note.textContent = 'Link copied.' },
        () => { note.textContent = 'Copy did not work; the link is selected, copy it by hand.' })
    }
    const receipt = ev.target.closest('[data-receipt]')
    if (receipt) downloadReceipt()
  })
})()
