// Settlement page glue: Socket.IO <-> htmx 2.x. No framework, no build step.
// Forms marked data-command="<event>" are emitted as protocol commands (fields as
// the payload, a fresh request_id); an error ack is shown in the form's
// .field-error; `html` events carry hx-swap-oob fragments swapped with htmx.swap.
// Seats live in seats.js, checks before sending in forms.js. See docs/browser.md.
(function () {
  'use strict'
  const $ = (sel) => document.querySelector(sel)
  const body = document.body
  const connId = body.dataset.connectionId || null
  const Seats = window.SettlementSeats
  const Forms = window.SettlementForms
  // [consent 1.1] static/consent.js signs this seat's commands (see docs/consent.md).
  const consent = window.SettlementConsent
  const requestId = () => Array.from(crypto.getRandomValues(new Uint8Array(16)),
    (b) => b.toString(16).padStart(2, '0')).join('')
  const FOCUS_NEXT = 'settlement:focus-next' // sessionStorage: focus the controls after a navigation

  let mine = null // the seat this tab holds here: {party, token}
  let socket = null
  let linkLost = false // connected once, then lost
  let pendingFocus = sessionStorage.getItem(FOCUS_NEXT)
  sessionStorage.removeItem(FOCUS_NEXT)

  // Messages: `transient` ones (offline, no answer) clear when the link is back.
  function showError (form, text, transient) {
    const out = form && form.querySelector('.field-error')
    if (!out) return
    out.textContent = text
    if (transient) out.dataset.transient = '1'
    else delete out.dataset.transient
  }
  const clearTransient = () => document.querySelectorAll('.field-error[data-transient]')
    .forEach((out) => { out.textContent = ''; delete out.dataset.transient })

  // Connection notice: visible while the link is down; Socket.IO reconnects by
  // itself and resends `auth`, and the server then redraws the page in full.
  const notice = $('#conn-notice')
  const LOST = 'Connection lost. Reconnecting… What you see may be out of date.'
  const UNAVAILABLE = 'The service is briefly unavailable. Trying again… What you see may be out of date.'
  let storeDown = false // the last connect was refused `unavailable`; a retry is due
  let clearing = null
  const showNotice = (text) => { notice.textContent = text; notice.hidden = !text }
  const storeBack = () => { clearTimeout(clearing); storeDown = false; showNotice('') }

  function connect (seat) {
    const auth = { view: 'html' }
    if (seat) Object.assign(auth, { connection_id: connId, token: seat.token })
    else if (connId) auth.connection_id = connId // no seat: follow the room live
    socket = io('/settlement', { auth })
    if (consent) consent.attach(socket, connId, () => (mine || {}).party) // [consent 1.1]
    let connected = false
    socket.on('connect', () => {
      connected = true
      linkLost = false
      clearTransient()
      // After a refused connect, wait a moment for another refusal before saying all is well.
      if (storeDown) clearing = setTimeout(storeBack, 1000)
      else showNotice('')
    })
    socket.on('disconnect', (reason) => {
      linkLost = true
      if (!storeDown) showNotice(LOST)
      if (reason === 'io server disconnect') socket.connect()
    })
    socket.on('connect_error', () => showNotice(connected ? LOST : 'Connecting to the server…'))
    socket.on('html', onHtml)
    socket.on('error', (err) => {
      if (mine && err && err.code === 'bad_token') { Seats.forget(connId, mine.party); location.reload() }
      // The store was down when this socket connected, so it is neither seated nor
      // following the room: say so, and connect again (auth and all) shortly.
      if (err && err.code === 'unavailable') {
        clearTimeout(clearing)
        storeDown = true
        showNotice(UNAVAILABLE)
        setTimeout(() => { socket.disconnect(); socket.connect() }, 3000)
      }
    })
  }

  function seated (seat) {
    mine = seat
    Seats.choose(connId, seat.party)
    Seats.hold(connId, seat.party)
    if (socket) Object.assign(socket.auth, { connection_id: connId, token: seat.token })
  }

  // Server-rendered fragments. A fragment carrying data-key is swapped only when
  // its key changes, so the forms (and what the user is typing) stay in place.
  // The live region takes only announcements newer than the last one.
  let lastSeq = -1
  let announced = -1
  let painted = false // a first html event has been applied
  document.addEventListener('htmx:oobBeforeSwap', (ev) => {
    const next = ev.detail.fragment && ev.detail.fragment.firstElementChild
    const key = next && next.getAttribute('data-key')
    if (key && key === ev.detail.target.getAttribute('data-key')) ev.detail.shouldSwap = false
    const seq = next && next.getAttribute('data-seq')
    if (seq !== null && ev.detail.target.id === 'announce') {
      if (announced < 0 || Number(seq) <= announced) ev.detail.shouldSwap = false // not on first paint
      announced = Math.max(announced, Number(seq))
    }
  })
  function onHtml (msg) {
    if (!connId || !msg || typeof msg.html !== 'string' || msg.seq < lastSeq) return
    lastSeq = msg.seq
    if (storeDown) storeBack()
    const wasSettled = Boolean($('#final:not([hidden])'))
    htmx.swap(body, msg.html, { swapStyle: 'none' })
    body.classList.remove('resuming')
    if (announced < 0) announced = msg.seq
    const invite = $('[data-invite]')
    if (invite) invite.value = new URL('/c/' + connId, location.href).href
    const audience = $('#controls') && $('#controls').dataset.audience
    if (mine && audience === 'none') { // unseated elsewhere (Leave in another tab)
      Seats.forget(connId, mine.party)
      mine = null
      delete socket.auth.token
      pendingFocus = null
    }
    if (Forms.offerSeen()) showError($('form[data-command="respond"]'), '') // about an older offer
    // Focus moves to the new heading: the seat's controls after Join (or
    // Continue), the final screen when the room settles while the page is open.
    if (painted && !wasSettled && $('#final-h')) pendingFocus = 'final'
    painted = true
    focusPending()
  }
  function focusPending () {
    const audience = $('#controls') && $('#controls').dataset.audience
    const heading = pendingFocus === 'final' ? $('#final-h')
      : pendingFocus && mine && audience === mine.party ? $('#controls-h') || $('#final-h') : null
    if (heading) { heading.focus(); pendingFocus = null }
  }

  // "Continue as Party A/B": this browser holds that seat; take it in this tab too.
  function offerChoice (parties) {
    const box = $('#seat-choice')
    const hint = $('#seat-choice-hint')
    hint.textContent = parties.length > 1 ? hint.dataset.both : hint.dataset.one
    for (const p of ['A', 'B']) $(`[data-continue="${p}"]`).hidden = !parties.includes(p)
    box.hidden = false
  }
  function continueAs (party) {
    const seat = Seats.load(connId, party)
    const out = $('#seat-choice')
    if (!seat) return showError(out, 'This browser no longer holds that seat.')
    socket.emit('resume', { connection_id: connId, token: seat.token }, (ack) => {
      if (ack && ack.ok) {
        out.hidden = true
        pendingFocus = 'controls'
        seated(seat)
        return focusPending() // the seat's fragments may have come before the ack
      }
      if (ack && ack.error && ack.error.code === 'bad_token') {
        Seats.forget(connId, party)
        $(`[data-continue="${party}"]`).hidden = true
        return showError(out, `Party ${party}'s seat was left or revoked, so this browser forgot it.`)
      }
      showError(out, (ack && ack.error && ack.error.message) || 'That did not work. Try again.', true)
    })
  }

  function describe (ack, command, payload) {
    const error = (ack && ack.error) || {}
    const offer = ack && ack.state && ack.state.offer
    if (error.code === 'stale_offer' && offer) {
      Forms.restartGuard()
      const box = $('#respond-offer')
      const amount = box && box.dataset.version === String(offer.version)
        ? box.dataset.amount : `${offer.amount} ${ack.state.currency}`
      return `Party A changed the offer to ${amount} (version ${offer.version}) before your` +
        ' answer arrived, so it was not recorded. Read the new amount, then answer again.'
    }
    if (command === 'join' && error.code === 'not_found' && payload.connection_id !== connId) {
      return `No connection has the id ${payload.connection_id}. Check it against the link or message you were sent.`
    }
    return error.message || 'Something went wrong. Please try again.'
  }

  function payloadOf (form, submitter) {
    const data = submitter && submitter.name ? new FormData(form, submitter) : new FormData(form)
    const payload = Object.fromEntries(data)
    for (const el of form.querySelectorAll('[name]')) {
      const name = el.name
      if (!(name in payload)) continue
      const type = el.dataset.type
      if (type === 'int') payload[name] = Number.parseInt(payload[name], 10)
      const checked = type === 'amount' ? Forms.amount(payload[name], Number(el.dataset.exponent || 0))
        : type === 'connection-id' ? Forms.connectionId(payload[name]) : null
      if (checked && checked.error) return { error: checked.error }
      if (checked) payload[name] = checked.value
      const onlyFor = el.dataset.onlyFor
      if (onlyFor && (onlyFor !== payload.decision || payload[name] === '')) delete payload[name]
    }
    return { payload }
  }

  const after = {
    create: (ack) => { Seats.save(ack); go(ack.connection_id) },
    join: (ack) => {
      Seats.save(ack)
      if (ack.connection_id !== connId) return go(ack.connection_id)
      // Joined from the invite page: the server now sends this seat's fragments;
      // reconnects resume the seat. Reload if the redraw does not come.
      pendingFocus = 'controls'
      seated(Seats.load(ack.connection_id, ack.party))
      focusPending()
      setTimeout(() => {
        if (!$('#controls[data-audience="none"]')) return
        sessionStorage.setItem(FOCUS_NEXT, 'controls')
        location.reload()
      }, 3000)
    },
    leave: () => { // the server's last redraw (no seat) may have forgotten the seat already
      if (mine) Seats.forget(connId, mine.party)
      location.assign('/?left=' + encodeURIComponent(connId))
    },
    respond: (ack, form, payload) => {
      if (payload.decision === 'dispute') form.querySelector('textarea[name="reason"]').value = ''
    }
  }
  function go (id) {
    sessionStorage.setItem(FOCUS_NEXT, 'controls')
    location.assign('/c/' + encodeURIComponent(id))
  }

  document.addEventListener('submit', (ev) => {
    const form = ev.target.closest('form[data-command]')
    if (!form) return
    ev.preventDefault()
    const submitter = ev.submitter
    const command = form.dataset.command
    if (form.getAttribute('aria-busy') === 'true') return showError(form, 'Still sending; wait for the answer.', true)
    if (submitter && submitter.getAttribute('aria-disabled') === 'true') {
      return showError(form, submitter.dataset.why || 'That button cannot be used right now.')
    }
    // Before the first connect a command waits in Socket.IO's buffer; after a
    // lost link it is not sent (the person would not know when it lands).
    if (!socket) return showError(form, 'Still connecting to the server; try again in a moment.', true)
    if (linkLost) {
      return showError(form, 'Not sent: the connection to the server is down. Try again once it is back.', true)
    }
    const soon = command === 'respond' && Forms.tooSoon()
    if (soon) return showError(form, soon)
    const { payload, error } = payloadOf(form, submitter)
    if (error) { Forms.markInvalid(form, 'bad_request'); return showError(form, error) }
    payload.request_id = requestId()
    form.setAttribute('aria-busy', 'true')
    // [consent 1.1] prepare() adds public_key / version / signature; kept(ack) stores
    // or forgets the seat's key before the page moves on.
    const signing = consent ? consent.prepare(command, payload) : Promise.resolve(null)
    signing.then((kept) => socket.timeout(15000).emit(command, payload, async (timeout, ack) => {
      form.removeAttribute('aria-busy')
      if (timeout) return showError(form, 'The server did not answer in time. Check your connection and try again.', true)
      const code = ack && !ack.ok && ack.error && ack.error.code
      Forms.markInvalid(form, code)
      if (code) return showError(form, describe(ack, command, payload), code === 'unavailable' || code === 'rate_limited')
      showError(form, '')
      if (kept) await kept(ack)
      if (after[command]) after[command](ack, form, payload)
    }))
  })

  function downloadReceipt () {
    return window.SettlementDownload.receipt(connId, mine && mine.token, $('#receipt-error'))
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
    if (ev.target.closest('[data-receipt]')) downloadReceipt()
    const choice = ev.target.closest('[data-continue]')
    if (choice) continueAs(choice.dataset.continue)
  })

  if (!connId) return connect(null)
  Seats.pick(connId).then(({ seat, choose }) => {
    if (seat) { body.classList.add('resuming'); seated(seat) } else pendingFocus = null
    connect(seat)
    if (choose) offerChoice(choose)
  })
})()
