// One short prompt per Spec-Bench category, from /work/shared/data/specbench-dev.jsonl
// (hemingkx/Spec-Bench, Apache-2.0). Multi-turn keeps only the first turn, since the demo
// sends one prompt; the long summarization and RAG contexts are cut to their first passage.

export const EXAMPLES = [
  {
    category: 'multi-turn',
    id: 104,
    prompt: 'David has three sisters. Each of them has one brother. How many brothers does David have?',
  },
  {
    category: 'translation',
    id: 190,
    prompt: 'Translate German to English: " Das habe ich verboten " , erklärte er .',
  },
  {
    category: 'summarization',
    id: 268,
    prompt:
      'Summarize: Jordon Ibe is poised to sign a new five-year contract with Liverpool by the end of the week. ' +
      'The 19-year-old has agreed terms on a deal which will keep him at Anfield until 2020. ' +
      'Ibe spent the first half of this season on loan at Derby County but returned to Liverpool in January ' +
      'and has made a notable impact in his eight appearances. Jordon Ibe has impressed since returning to ' +
      'Liverpool this season and will sign a new contract this week.',
  },
  {
    category: 'qa',
    id: 366,
    prompt: 'Where can you find dna in the body?',
  },
  {
    category: 'math',
    id: 444,
    prompt: 'Geb is 10 less than half the age of Haley. If Haley is 26 years old, how old is Geb?',
  },
  {
    category: 'rag',
    id: 482,
    prompt:
      'Got My Mind Set on You "Got My Mind Set on You" (also written as "(Got My Mind) Set on You") is a song ' +
      'written and composed by Rudy Clark and originally recorded by James Ray in 1962, under the title ' +
      '"I\'ve Got My Mind Set on You". An edited version of the song was released later in the year as a single ' +
      'on the Dynamic Sound label. In 1987, George Harrison released a cover version of the song as a single, ' +
      'and released it on his album "Cloud Nine," which he had recorded on his own Dark Horse Records label.\n' +
      'Who sings got my mind set on you?',
  },
];
