// Download a connection's receipt JSON (GET /api/connections/<ID>/receipt with the
// seat's token) as `receipt-<ID>.json`; used by the room page (app.js) and the
// receipt page (receipt.js). A failure is written into `out` (a role=alert element).
(function () {
  'use strict'
  async function receipt (connId, token, out) {
    try {
      if (!token) throw new Error('Only a seated party can download the receipt.')
      const response = await fetch('/api/connections/' + encodeURIComponent(connId) + '/receipt',
        { headers: { Authorization: 'Bearer ' + token }, cache: 'no-store', credentials: 'omit' })
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
  window.SettlementDownload = { receipt }
})()
