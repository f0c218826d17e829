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
      'Please tell me what my dog is called.',
      'What is the name of the dog I walk?',
      'Tell me the name of my dog.',
      'Do you know what my pet is called?',
      'What do I call my pet?',
      'My pet, what was its name again?',
      'What is my puppy called?',
      'Please remind me of my pet\'s name.',
      'Who is the dog I walk every morning?',
      'What is the name of my puppy?',
      'How did I name my pet?',
      'Can you tell me my pet\'s name?',
    ],
    probe: ['What is the name of my pet?', 'Tell me my dog\'s name, please.', 'How is my dog called?'],
    answer: [
      'Your dog is called {v}.',
      'Your dog\'s name is {v}.',
      'Your dog is {v}.',
      'It is {v}, your dog.',
      '{v} is your dog\'s name.',
      'You call your dog {v}.',
      'Your dog answers to {v}.',
      'The name of your dog is {v}.',
      'Your pet is called {v}.',
      'Your dog is named {v}.',
      '{v}, your dog.',
      'You named your dog {v}.',
      'Your puppy is {v}.',
      'That is {v}, your dog.',
      'Your dog goes by {v}.',
      'We talked about {v}, your dog.',
      'Your pet\'s name is {v}.',
      'Your dog? {v}.',
      'You walk {v}, your dog.',
      'Your dog is {v}, remember?',
    ],
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
      'Please tell me which tablets I take.',
      'What is the name of the drug I take?',
      'Tell me the name of my medicine.',
      'Do you know which medication I am on?',
      'What pills do I take?',
      'My medication, what was it again?',
      'Which tablets did my doctor give me?',
      'Please remind me of my medicine\'s name.',
      'What drug do I swallow every morning?',
      'What is the name of my pills?',
      'Which medication do I use?',
      'Can you tell me my medicine?',
    ],
    probe: ['What is the name of my medication?', 'Tell me which medicine I am taking.', 'Which drug am I prescribed?'],
    answer: [
      'You take {v}.',
      'Your medication is {v}.',
      'You are on {v}.',
      'It is {v}, your medication.',
      '{v} is your medicine.',
      'Your doctor prescribed {v}.',
      'You take {v} every day.',
      'The name of your medicine is {v}.',
      'Your tablets are {v}.',
      'You are taking {v}.',
      '{v}, your medication.',
      'Your prescription is {v}.',
      'Your pills are {v}.',
      'That is {v}, your medicine.',
      'You swallow {v}.',
      'We talked about {v}, your medication.',
      'Your medicine\'s name is {v}.',
      'Your medication? {v}.',
      'You were put on {v}.',
      'Your medicine is {v}, remember?',
    ],
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
      'Please tell me which city my home is in.',
      'What is the name of the city I live in?',
      'Tell me the name of my city.',
      'Do you know which town I live in?',
      'Where is my home town?',
      'My city, what was it again?',
      'In which town is my house?',
      'Please remind me of my city\'s name.',
      'Which place do I live in?',
      'What is the name of my town?',
      'Where did I move to?',
      'Can you tell me my city?',
    ],
    probe: ['What city do I live in?', 'Tell me where I live, please.', 'Which town is my home?'],
    answer: [
      'You live in {v}.',
      'Your home is in {v}.',
      'You live in {v}, of course.',
      'It is {v}, your city.',
      '{v} is your home.',
      'Your city is {v}.',
      'You are living in {v}.',
      'The name of your city is {v}.',
      'Your house is in {v}.',
      'You call {v} home.',
      '{v}, your home town.',
      'You moved to {v}.',
      'Your town is {v}.',
      'That is {v}, your city.',
      'Your home town is {v}.',
      'We talked about {v}, your city.',
      'Your city\'s name is {v}.',
      'Your city? {v}.',
      'Your house is in {v}, remember?',
      'You live in {v}, remember?',
    ],
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
 * Question frames shared by every fact kind, filled with each kind's nouns, so that what tells the
 * kinds apart is the noun, not the sentence shape (hand-written questions alone left "the name of my
 * ..." tied to the pet). Frames and nouns never rebuild a probe wording (checked below).
 */
const NOUNS: Record<FactKind, { thing: readonly string[]; named: readonly string[] }> = {
  pet: { thing: ['dog', 'pet', 'puppy'], named: ["dog's name", "pet's name"] },
  medication: { thing: ['medication', 'medicine', 'tablets', 'pills', 'drug'], named: ["medication's name", "medicine's name"] },
  city: { thing: ['city', 'town', 'home town'], named: ["city's name", "town's name"] },
};
const THING_FRAMES = ['Tell me the name of my {t}.', 'Do you remember my {t}?', 'What was my {t} again?', 'Which {t} did I tell you about?', 'Can you remind me about my {t}?'];
const NAMED_FRAMES = ['What is my {n}?', 'Please tell me my {n}.', 'I forgot my {n}, what is it?', 'Do you know my {n}?'];
/** Appended once the answer templates run out, so that no two replies are the same text. */
const SUFFIXES = ['', ' You told me before.', ' I hope this helps.', ' Ask me anytime.'];

function trainingQuestions(k: FactKind): string[] {
  const framed = [
    ...THING_FRAMES.flatMap((f) => NOUNS[k].thing.map((t) => f.replace('{t}', t))),
    ...NAMED_FRAMES.flatMap((f) => NOUNS[k].named.map((n) => f.replace('{n}', n))),
  ];
  const probes = new Set(FACT_KINDS.flatMap((kind) => QUESTIONS[kind].probe));
  return [...new Set([...QUESTIONS[k].train, ...framed])].filter((q) => !probes.has(q));
}

function answerFor(k: FactKind, i: number, v: string): string {
  const a = QUESTIONS[k].answer;
  return fill(a[i % a.length], v) + SUFFIXES[Math.floor(i / a.length) % SUFFIXES.length];
}

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
      trainingQuestions(k).forEach((q, i) => {
        const c = `p${u}-c${conv++}`;
        turn('user', q, c);
        turn('assistant', answerFor(k, i, facts[k]), c);
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
