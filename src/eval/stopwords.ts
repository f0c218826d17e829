/**
 * Stop words for Persona-F1.
 *
 * Source: NLTK's English stop-word list (`nltk.corpus.stopwords.words('english')`, the 179-word
 * list shipped in nltk_data since 2018), written out here so that no download is needed. MSP, where
 * Persona-F1 comes from, reads an `english.txt` stop-word file that its repository does not publish;
 * NLTK's list is the common stand-in, and we say so wherever Persona-F1 is reported.
 *
 * Our tokenisation (see metrics.ts) splits at apostrophes, so entries like "don't" can never match a
 * token; the list carries the fragments ("don", "t", "ll", "ve", ...) for exactly that reason, and
 * we keep it verbatim rather than edit it.
 */
export const NLTK_ENGLISH_STOP_WORDS: readonly string[] = [
  'i', 'me', 'my', 'myself', 'we', 'our', 'ours', 'ourselves', 'you', "you're", "you've", "you'll",
  "you'd", 'your', 'yours', 'yourself', 'yourselves', 'he', 'him', 'his', 'himself', 'she', "she's",
  'her', 'hers', 'herself', 'it', "it's", 'its', 'itself', 'they', 'them', 'their', 'theirs',
  'themselves', 'what', 'which', 'who', 'whom', 'this', 'that', "that'll", 'these', 'those', 'am',
  'is', 'are', 'was', 'were', 'be', 'been', 'being', 'have', 'has', 'had', 'having', 'do', 'does',
  'did', 'doing', 'a', 'an', 'the', 'and', 'but', 'if', 'or', 'because', 'as', 'until', 'while', 'of',
  'at', 'by', 'for', 'with', 'about', 'against', 'between', 'into', 'through', 'during', 'before',
  'after', 'above', 'below', 'to', 'from', 'up', 'down', 'in', 'out', 'on', 'off', 'over', 'under',
  'again', 'further', 'then', 'once', 'here', 'there', 'when', 'where', 'why', 'how', 'all', 'any',
  'both', 'each', 'few', 'more', 'most', 'other', 'some', 'such', 'no', 'nor', 'not', 'only', 'own',
  'same', 'so', 'than', 'too', 'very', 's', 't', 'can', 'will', 'just', 'don', "don't", 'should',
  "should've", 'now', 'd', 'll', 'm', 'o', 're', 've', 'y', 'ain', 'aren', "aren't", 'couldn',
  "couldn't", 'didn', "didn't", 'doesn', "doesn't", 'hadn', "hadn't", 'hasn', "hasn't", 'haven',
  "haven't", 'isn', "isn't", 'ma', 'mightn', "mightn't", 'mustn', "mustn't", 'needn', "needn't",
  'shan', "shan't", 'shouldn', "shouldn't", 'wasn', "wasn't", 'weren', "weren't", 'won', "won't",
  'wouldn', "wouldn't",
];

export const STOP_WORDS: ReadonlySet<string> = new Set(NLTK_ENGLISH_STOP_WORDS);

export function isStopWord(token: string): boolean {
  return STOP_WORDS.has(token);
}
