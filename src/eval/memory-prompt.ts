/**
 * How retrieved memory enters a prompt (the "w Mem" baseline and the service's `memory` mode): the
 * retrieved history items become one system message placed before the conversation,
 *
 *     Relevant history of this user:
 *     - <item 1>
 *     - <item 2>
 *
 * appended to an existing system message (the profile) when there is one.
 */
import type { ChatMessage } from '../model/chat-format.js';

export const MEMORY_HEADER = 'Relevant history of this user:';

export function memoryBlock(items: readonly string[]): string {
  return [MEMORY_HEADER, ...items.map((t) => `- ${t.replace(/\s+/g, ' ').trim()}`)].join('\n');
}

export function withMemory(messages: readonly ChatMessage[], items: readonly string[]): ChatMessage[] {
  if (items.length === 0) return [...messages];
  const block = memoryBlock(items);
  if (messages[0]?.role === 'system') return [{ role: 'system', content: `${messages[0].content}\n${block}` }, ...messages.slice(1)];
  return [{ role: 'system', content: block }, ...messages];
}
