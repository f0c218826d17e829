/** Every error raised by the search carries a machine-readable code and the value that was wrong. */
export class SearchError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = 'SearchError';
  }
}
