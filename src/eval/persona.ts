/**
 * A controlled persona set for measuring memory injection: synthetic users whose histories state
 * distinctive facts (a pet's name, a medication, a city) in varied wording, and held-out probe
 * questions whose answers need those facts. Training dialogues and probes never share a question
 * wording, so a correct probe answer shows the fact was injected, not the question memorised.
 */
import type { HistoryItem } from '../inject/dataset.js';
import { Rng } from '../util/rng.js';

export type FactKind = 'pet' | 'medication' | 'city';
export const FACT_KINDS: readonly FactKind[] = ['pet', 'medication', 'city'];

const VALUES: Record<FactKind, readonly string[]> = {
  pet: ['Biscuit', 'Pepper', 'Mango', 'Ziggy', 'Noodle', 'Waffle', 'Pickles', 'Juniper', 'Bramble', 'Tofu', 'Marble', 'Comet'],
  medication: ['metformin', 'lisinopril', 'atorvastatin', 'levothyroxine', 'amlodipine', 'omeprazole', 'sertraline', 'losartan', 'gabapentin', 'montelukast', 'warfarin', 'prednisone'],
  city: ['Lyon', 'Oslo', 'Porto', 'Krakow', 'Dublin', 'Seville', 'Tallinn', 'Bergen', 'Ghent', 'Turin', 'Graz', 'Aarhus'],
};

/** Statements of a fact the user makes, with the assistant's acknowledgement (varied wording). */
const STATEMENTS: Record<FactKind, readonly [string, string][]> = {
  pet: [
    ['My dog {v} keeps me company when I feel unwell.', 'It is good that {v} keeps you company.'],
    ['I walk {v}, my dog, every morning before breakfast.', 'Walking {v} every morning is good exercise.'],
    ['{v} is the name of my dog, he is very playful.', 'A playful dog like {v} can lift your mood.'],
  ],
  medication: [
    ['I take {v} every day for my condition.', 'Keep taking {v} as your doctor prescribed.'],
    ['My doctor put me on {v} last year.', 'Good that you are on {v}; do not stop it suddenly.'],
    ['Every morning I swallow one tablet of {v}.', 'One tablet of {v} each morning, as prescribed.'],
  ],
  city: [
    ['I live in {v} with my family.', 'Living in {v} with your family sounds lovely.'],
    ['The clinic near my home in {v} is closed on Sundays.', 'Many clinics in {v} close on Sundays.'],
    ['I moved to {v} three years ago.', 'Three years in {v}, you must know the city well.'],
  ],
};

/** Questions whose answers need the fact, with the answer template. Split into training and probe wordings. */
const QUESTIONS: Record<FactKind, { train: readonly string[]; probe: readonly string[]; answer: readonly string[] }> = {
  pet: {
    train: [
      'What is my dog called?',
      'Can you remind me of my dog\'s name?',
      'Do you remember the name of my dog?',
      'What did I say my dog is named?',
      'Who is my dog?',
      'What name did I give my dog?',
      'Remind me, what is my dog\'s name?',
      'Which name does my dog answer to?',
    ],
    probe: ['What is the name of my pet?', 'Tell me my dog\'s name, please.', 'How is my dog called?'],
    answer: ['Your dog is called {v}.', 'Your dog\'s name is {v}.', 'Your dog is {v}.'],
  },
  medication: {
    train: [
      'Which medicine do I take?',
      'What medication am I on?',
      'Can you remind me which tablets I take?',
      'What drug did my doctor prescribe me?',
      'Which pill do I swallow every day?',
      'What tablets am I taking at the moment?',
      'Remind me, what is my medication?',
      'Which medicine did my doctor put me on?',
    ],
    probe: ['What is the name of my medication?', 'Tell me which medicine I am taking.', 'Which drug am I prescribed?'],
    answer: ['You take {v}.', 'Your medication is {v}.', 'You are on {v}.'],
  },
  city: {
    train: [
      'Where do I live?',
      'Which city is my home?',
      'Can you remind me which city I live in?',
      'In what city is my home?',
      'Where is my house?',
      'What city am I living in?',
      'Remind me, where is my home?',
      'Which city do I call home?',
    ],
    probe: ['What city do I live in?', 'Tell me where I live, please.', 'Which town is my home?'],
    answer: ['You live in {v}.', 'Your home is in {v}.', 'You live in {v}, of course.'],
  },
};

export interface PersonaProbe {
  kind: FactKind;
  question: string;
  /** The fact the answer must contain. */
  fact: string;
  /** A reference answer (for probe-answer loss). */
  answer: string;
}

export interface PersonaUser {
  id: string;
  facts: Record<FactKind, string>;
  history: HistoryItem[];
  probes: PersonaProbe[];
}

const fill = (t: string, v: string): string => t.replaceAll('{v}', v);

/**
 * `count` users, each with a distinct value per fact kind (seeded). History: each fact stated in every
 * statement wording, and each training question asked and answered, one conversation per exchange.
 */
export function makePersonaUsers(count: number, seed = 1): PersonaUser[] {
  const rng = new Rng(seed);
  const pools = Object.fromEntries(FACT_KINDS.map((k) => [k, rng.shuffle([...VALUES[k]])])) as Record<FactKind, string[]>;
  if (count > Math.min(...FACT_KINDS.map((k) => pools[k].length))) throw new Error(`at most ${VALUES.pet.length} persona users`);
  return Array.from({ length: count }, (_, u) => {
    const facts = Object.fromEntries(FACT_KINDS.map((k) => [k, pools[k][u]])) as Record<FactKind, string>;
    const history: HistoryItem[] = [];
    let id = 1;
    let conv = 0;
    const turn = (role: 'user' | 'assistant', text: string, c: string): void => {
      history.push({ id, kind: 'dialogue', role, text, conversationId: c, createdAt: 1_700_000_000_000 + id * 1000 });
      id++;
    };
    for (const k of FACT_KINDS) {
      for (const [say, ack] of STATEMENTS[k]) {
        const c = `p${u}-c${conv++}`;
        turn('user', fill(say, facts[k]), c);
        turn('assistant', fill(ack, facts[k]), c);
      }
      QUESTIONS[k].train.forEach((q, i) => {
        const c = `p${u}-c${conv++}`;
        turn('user', q, c);
        turn('assistant', fill(QUESTIONS[k].answer[i % QUESTIONS[k].answer.length], facts[k]), c);
      });
    }
    const probes = FACT_KINDS.flatMap((k) =>
      QUESTIONS[k].probe.map((question, i) => ({ kind: k, question, fact: facts[k], answer: fill(QUESTIONS[k].answer[i % QUESTIONS[k].answer.length], facts[k]) })),
    );
    return { id: `persona-${u}`, facts, history, probes };
  });
}

/** Whether a reply states the fact (case-insensitive word match). */
export function containsFact(reply: string, fact: string): boolean {
  return new RegExp(`\\b${fact.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\b`, 'i').test(reply);
}
