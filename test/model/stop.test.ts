import { describe, expect, it } from 'vitest';
import { StopMatcher } from '../../src/model/stop.js';

function run(stops: string[], pieces: string[], kept: string[] = []): { shown: string[]; stopped: boolean; tail: string } {
  const m = new StopMatcher(stops, new Set(kept));
  const shown: string[] = [];
  let stopped = false;
  for (const p of pieces) {
    const r = m.push(p);
    shown.push(r.text);
    if (r.stopped) {
      stopped = true;
      break;
    }
  }
  return { shown, stopped, tail: stopped ? '' : m.flush() };
}

describe('StopMatcher', () => {
  it('holds back a possible stop string and trims it when it completes across pieces', () => {
    const r = run(['\nUser:'], ['Hello', ' there\n', 'Us', 'er: next']);
    expect(r.shown).toEqual(['Hello', ' there', '', '']);
    expect(r.stopped).toBe(true);
  });

  it('releases held text once it can no longer become a stop string', () => {
    const r = run(['\nUser:'], ['a\n', 'Use', 'd it']);
    expect(r.shown).toEqual(['a', '', '\nUsed it']);
    expect(r.stopped).toBe(false);
  });

  it('stops at the earliest of several stop strings, inside one piece', () => {
    const r = run(['END', 'STOP'], ['xx STOP yy END']);
    expect(r.shown).toEqual(['xx ']);
  });

  it('keeps a stop string to keep at the end of the text (include_stop_str_in_output), and only those', () => {
    // Completed across pieces: held back, then shown whole, and nothing after it.
    const r = run(['\nUser:', '</s>'], ['Hello', ' there\n', 'Us', 'er: next'], ['\nUser:']);
    expect(r.shown).toEqual(['Hello', ' there', '', '\nUser:']);
    expect(r.stopped).toBe(true);
    // The earliest stop decides; one not kept (a chat template's) is cut as ever.
    expect(run(['END', 'STOP'], ['xx STOP yy END'], ['END', 'STOP']).shown).toEqual(['xx STOP']);
    expect(run(['END', '</s>'], ['xx </s> END'], ['END']).shown).toEqual(['xx ']);
    const m = new StopMatcher(['END'], new Set(['END']));
    m.push('a END b');
    expect(m.output).toBe('a END');
  });

  it('releases unarmed text at once, unmatched, and looks for stop strings only in what comes after', () => {
    const m = new StopMatcher(['END']);
    expect(m.push('a END b EN', false)).toEqual({ text: 'a END b EN', stopped: false });
    expect(m.push('D c')).toEqual({ text: 'D c', stopped: false }); // 'EN' + 'D' spans the arming: not a stop
    expect(m.push(' x EN')).toEqual({ text: ' x ', stopped: false });
    expect(m.push('D!')).toEqual({ text: '', stopped: true });
    expect(m.output).toBe('a END b END c x ');
  });

  it('flushes the held-back tail when the sequence ends otherwise', () => {
    const r = run(['<|end|>'], ['answer <|e']);
    expect(r.shown).toEqual(['answer ']);
    expect(r.tail).toBe('<|e');
  });

  it('passes text through without stop strings', () => {
    expect(run([], ['a', 'b']).shown).toEqual(['a', 'b']);
  });
});
