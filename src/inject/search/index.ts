/** Public surface of the MiLP configuration search. */
export { SearchError } from './errors.js';
export { Rng, hashSeed } from '../../util/rng.js';
export { RANKS, SearchSpace, createSpace, type FixedParts, type LoraConfig, type Rank, type SpaceOptions } from './space.js';
export { initialDesign, sobolPoints } from './design.js';
export { GpPosterior, GpTrainingData, logMarginalLikelihood, standardize, type GpHyperparameters } from './gp.js';
export { DEFAULT_MAP, SAAS_PRIOR, fitSaasModel, medianLengthscales, saasLogPosterior, type FitDiagnostics, type FitOptions, type MapOptions, type ObjectiveModel } from './saas.js';
export { DEFAULT_NUTS, runNuts, type LogDensity, type NutsOptions, type NutsResult } from './nuts.js';
export { dominates, paretoFront, toMinimization, type Objectives } from './pareto.js';
export { hypervolume2d, hypervolumeImprovement2d } from './hypervolume.js';
export { DEFAULT_NEHVI, Nehvi, paretoProbabilities, type NehviOptions } from './nehvi.js';
export { DEFAULT_OPTIMIZER, optimizeAcquisition, type OptimizerOptions, type Proposal } from './optimize.js';
export { DEFAULT_LOSS_TOLERANCE, chooseTrial, chosenRule, paretoTrials } from './choose.js';
export { JsonFileTrialStore, MemoryTrialStore, type TrialStore } from './store.js';
export { isOk, type OkTrial, type Trial, type TrialPhase } from './trial.js';
export {
  formatProgress,
  hypervolumeCurve,
  hypervolumeOf,
  inferReferencePoint,
  runSearch,
  type AcquisitionSettings,
  type EvaluationResult,
  type Evaluator,
  type SearchOptions,
  type SearchProgress,
  type SearchResult,
  type StopReason,
  type TrialContext,
} from './loop.js';
