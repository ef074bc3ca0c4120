// The readable receipt page (/c/<ID>/receipt). The server sends only a shell: the
// receipt holds amounts and is for the two parties, so this script takes the seat
// token this browser keeps for the connection and asks for the receipt with it
// (Authorization: Bearer, never in a URL). A browser without a seat keeps the
// "for the parties only" note. See docs/browser.md, "The receipt and the verifier".
(function () {
  'use strict'
  const body = document.body
  const connId = body.dataset.connectionId
  const holder = document.getElementById('receipt-body')
  if (!connId || !holder) return

  // Every seat token this browser holds for the connection, from the negotiation
  // page's storage entries: keys starting `settlement` and naming the id (version 1's
  // `settlement.seat.<ID>` in sessionStorage, 1.1's `settlement:seat:<ID>:<party>` in
  // localStorage), whose JSON value holds a `token` (or an object of such values).
  function seatTokens () {
    const tokens = []
    const collect = (value, depth) => {
      if (!value || typeof value !== 'object' || depth > 2) return
      if (typeof value.token === 'string' && value.token) tokens.push(value.token)
      else Object.values(value).forEach((inner) => collect(inner, depth + 1))
    }
    for (const name of ['localStorage', 'sessionStorage']) {
      let store
      try { store = window[name] } catch (e) { continue }
      if (!store) continue
      for (let i = 0; i < store.length; i++) {
        const key = store.key(i)
        if (!key || !key.startsWith('settlement') || !key.toUpperCase().includes(connId)) continue
        try { collect(JSON.parse(store.getItem(key) || 'null'), 0) } catch (e) { /* not ours */ }
      }
    }
    return [...new Set(tokens)]
  }

  const base = '/c/' + encodeURIComponent(connId) + '/receipt'
  let token = null

  async function load () {
    const tokens = seatTokens()
    let last = null
    for (const candidate of tokens) {
      const response = await fetch(base + '/fragment', {
        headers: { Authorization: 'Bearer ' + candidate, Accept: 'text/html' },
        cache: 'no-store',
        credentials: 'omit'
      })
      last = response
      if (response.status !== 401) { token = candidate; break }
    }
    if (!last) return // no seat here: the shell's note stays
    holder.innerHTML = await last.text() // server-rendered, autoescaped HTML
    const heading = document.getElementById(last.ok ? 'receipt-title' : 'receipt-h')
    if (last.ok && heading) heading.focus()
  }

  function downloadJson () {
    return window.SettlementDownload.receipt(connId, token, document.getElementById('receipt-json-error'))
  }

  document.addEventListener('click', (ev) => {
    if (ev.target.closest('[data-print]')) window.print()
    if (ev.target.closest('[data-receipt-json]')) downloadJson()
  })

  load().catch(() => {
    const note = document.createElement('p')
    note.className = 'field-error'
    note.setAttribute('role', 'alert')
    note.textContent = 'The receipt could not be loaded. Check your connection and reload the page.'
    holder.prepend(note)
  })
})()
