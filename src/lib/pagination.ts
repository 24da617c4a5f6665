/**
 * A page of a keyset query that fetched `limit + 1` rows: the extra row only tells
 * whether there is more; the cursor is the key of the last row shown.
 */
export function keysetPage<R, V>(rows: R[], limit: number, cursorOf: (row: R) => string, view: (row: R) => V) {
  const page = rows.slice(0, limit)
  return { items: page.map(view), next_cursor: rows.length > limit ? cursorOf(page[page.length - 1]!) : null }
}
