export * from './params.js';
export * from './adamw.js';
export * from './schedule.js';
export * from './errors.js';
export * from './trainer.js';
