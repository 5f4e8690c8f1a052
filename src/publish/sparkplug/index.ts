/** Sparkplug B Edge Node for SCADA hosts (README "Sparkplug B"); the daemon needs only this module. */
export { SparkplugNode, type SparkplugOptions, type SparkplugHandlers, type SparkplugLog, type CommandMeta } from './node.ts';
export { METRIC, CONTROLS, type StationMetrics, type LastPart, type SparkplugCommand, type Verdict } from './metrics.ts';
export { sparkplugTopics, NAMESPACE } from './topics.ts';
export { stateTopic } from './primary-host.ts';
export { BDSEQ_FILE } from './bdseq.ts';
