// Seats that outlive a tab (PROTOCOL.md "Browser pages, version 1.1").
// localStorage `settlement:seat:<ID>:<party>` -> {"token", "party", "connection_id",
// "saved_at"}: the browser's seats, kept until Leave (an object, so a party key can
// be referenced beside the token later). sessionStorage `settlement:tab:<ID>` ->
// "A"|"B": which of them this tab is, so two tabs can be A and B and a reload keeps
// the tab's seat. A tab holding a seat also holds a shared Web Lock named like its
// localStorage key, so a new tab can tell a seat open elsewhere from a closed one.
(function () {
  'use strict'
  const PARTIES = ['A', 'B']
  const seatKey = (id, party) => `settlement:seat:${id}:${party}`
  const tabKey = (id) => `settlement:tab:${id}`
  const read = (store, key) => {
    try { return JSON.parse(store.getItem(key) || 'null') } catch (e) { return null }
  }

  function load (id, party) {
    const seat = read(localStorage, seatKey(id, party))
    return seat && typeof seat.token === 'string' ? seat : null
  }
  function save (ack) {
    const seat = { token: ack.token, party: ack.party, connection_id: ack.connection_id,
      saved_at: new Date().toISOString() }
    localStorage.setItem(seatKey(ack.connection_id, ack.party), JSON.stringify(seat))
    sessionStorage.setItem(tabKey(ack.connection_id), ack.party)
    return seat
  }
  function choose (id, party) { sessionStorage.setItem(tabKey(id), party) }
  function forget (id, party) {
    localStorage.removeItem(seatKey(id, party))
    if (sessionStorage.getItem(tabKey(id)) === party) sessionStorage.removeItem(tabKey(id))
    release()
  }
  const held = (id) => PARTIES.filter((p) => load(id, p))

  // Version 1 kept {party, token} in this tab's sessionStorage only: carry it over.
  function migrate (id) {
    const old = read(sessionStorage, 'settlement.seat.' + id)
    if (old && PARTIES.includes(old.party) && typeof old.token === 'string') {
      save({ token: old.token, party: old.party, connection_id: id })
    }
    sessionStorage.removeItem('settlement.seat.' + id)
  }

  async function openElsewhere (id) {
    if (!navigator.locks) return new Set() // no Web Locks: treat every stored seat as closed
    const state = await navigator.locks.query()
    return new Set(PARTIES.filter((p) => state.held.some((l) => l.name === seatKey(id, p))))
  }

  // What this tab starts as: {seat} to resume, {choose: [parties]} to ask, or {}.
  async function pick (id) {
    migrate(id)
    const mine = sessionStorage.getItem(tabKey(id))
    if (mine && load(id, mine)) return { seat: load(id, mine) }
    const seats = held(id)
    if (seats.length === 0) return {}
    if (seats.length === 1 && !(await openElsewhere(id)).has(seats[0])) {
      choose(id, seats[0])
      return { seat: load(id, seats[0]) }
    }
    return { choose: seats }
  }

  let releaseLock = null
  function hold (id, party) {
    if (!navigator.locks || releaseLock) return
    navigator.locks.request(seatKey(id, party), { mode: 'shared' },
      () => new Promise((resolve) => { releaseLock = resolve }))
  }
  function release () {
    if (releaseLock) releaseLock()
    releaseLock = null
  }

  window.SettlementSeats = { load, save, choose, forget, held, pick, hold, release }
})()
