// What the page checks before it sends: amounts written the way the page writes
// them, connection ids as people paste them, and B's answer to an offer that has
// only just appeared. See docs/browser.md ("Amounts", "The one-second guard").
(function () {
  'use strict'
  const EXAMPLE_ID = 'K7QF-3MZP-XW2D'

  // "1,250.50" or "1250.50" (commas only between thousands, a point before the
  // decimals) -> the protocol's plain decimal, padded to the currency's decimals.
  // Anything else is passed on as typed for the server to refuse, except a comma
  // that cannot be a thousands separator, which is refused here (is "1,5" 1.5?).
  function amount (text, exponent) {
    const typed = text.trim()
    let plain = typed
    if (typed.includes(',')) {
      if (!/^\d{1,3}(,\d{3})+(\.\d*)?$/.test(typed)) {
        return { error: `Commas only go between thousands, as in 1,250; write decimals after a point, as in 1250.${'5'.padEnd(exponent || 1, '0')}.` }
      }
      plain = typed.replace(/,/g, '')
    }
    const match = /^(\d+)(?:\.(\d+))?$/.exec(plain)
    if (match && exponent > 0 && (match[2] || '').length < exponent) {
      plain = match[1] + '.' + (match[2] || '').padEnd(exponent, '0')
    }
    return { value: plain, valid: Boolean(match) }
  }

  function preview (input) {
    const out = document.getElementById('amount-preview')
    if (!out) return
    const got = amount(input.value, Number(input.dataset.exponent || 0))
    out.textContent = got.valid ? `Will send ${got.value} ${input.dataset.currency}.` : ''
  }

  // Spaces, tabs and hyphens anywhere are ignored, case does not matter.
  function connectionId (text) {
    const chars = text.replace(/[\s-]+/g, '').toUpperCase()
    const looks = `A Connection ID has 12 letters and digits, for example ${EXAMPLE_ID}`
    if (!chars) return { error: `Type or paste a Connection ID. ${looks}.` }
    if (/[^0-9A-Z]/.test(chars)) return { error: `${looks}, and nothing else besides hyphens or spaces.` }
    if (chars.length !== 12) {
      return { error: `${looks}; this one has ${chars.length}. Check that you copied all of it.` }
    }
    if (/[ILOU]/.test(chars)) return { error: `${looks}. It never contains I, L, O or U: check the letters.` }
    return { value: `${chars.slice(0, 4)}-${chars.slice(4, 8)}-${chars.slice(8)}` }
  }

  // The one-second guard: B's Accept or Dispute within a second of the offer
  // changing on this page is not sent; the page shows the change instead.
  const GUARD_MS = 1000
  let shown = null // {version, amount, previous, at}
  function offerSeen () {
    const box = document.getElementById('respond-offer')
    const version = box && box.dataset.version
    if (!version || (shown && shown.version === version)) return false
    shown = { version, amount: box.dataset.amount, previous: shown && shown.amount, at: performance.now() }
    return true
  }
  function restartGuard () { if (shown) shown.at = performance.now() }
  function tooSoon () {
    offerSeen()
    if (!shown || performance.now() - shown.at >= GUARD_MS) return null
    highlight()
    const what = shown.previous
      ? `the offer changed from ${shown.previous} to ${shown.amount} a moment ago`
      : `Party A's offer of ${shown.amount} appeared a moment ago`
    return `Not sent: ${what}. Read it, then press again.`
  }
  function highlight () {
    const box = document.getElementById('respond-offer')
    if (!box || !shown || !shown.previous || box.querySelector('.offer-change')) return
    const line = document.createElement('p')
    line.className = 'offer-change'
    const old = document.createElement('del')
    old.textContent = shown.previous
    const now = document.createElement('mark')
    now.textContent = shown.amount
    line.append('Changed from ', old, ' to ', now, '.')
    box.append(line)
  }

  // aria-invalid on the field a refusal was about (data-invalid-on lists the codes).
  function markInvalid (form, code) {
    form.querySelectorAll('[data-invalid-on]').forEach((field) => {
      if (code && field.dataset.invalidOn.split(' ').includes(code)) field.setAttribute('aria-invalid', 'true')
      else field.removeAttribute('aria-invalid')
    })
  }

  document.addEventListener('input', (ev) => {
    const field = ev.target
    if (field.removeAttribute && field.hasAttribute('aria-invalid')) field.removeAttribute('aria-invalid')
    if (field.dataset && field.dataset.type === 'amount') preview(field)
  })

  window.SettlementForms = { amount, connectionId, offerSeen, restartGuard, tooSoon, markInvalid }
})()
