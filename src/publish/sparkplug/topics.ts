/** Sparkplug B topic namespace (spec §4.1): spBv1.0/<group_id>/<message_type>/<edge_node_id>[/<device_id>]. */
export const NAMESPACE = 'spBv1.0';

export function sparkplugTopics(group: string, node: string, device: string) {
  const n = (type: string) => `${NAMESPACE}/${group}/${type}/${node}`;
  const d = (type: string) => `${n(type)}/${device}`;
  return {
    nbirth: n('NBIRTH'),
    ndeath: n('NDEATH'),
    ndata: n('NDATA'),
    ncmd: n('NCMD'),
    dbirth: d('DBIRTH'),
    ddeath: d('DDEATH'),
    ddata: d('DDATA'),
    dcmd: d('DCMD'),
  };
}
export type SparkplugTopics = ReturnType<typeof sparkplugTopics>;

/**
 * Group, node, device and host ids are topic levels: + / # are reserved (tck-id-topic-structure-
 * namespace-valid-group-id and siblings); control characters and overlong ids are refused as well,
 * since they end up as tag paths in the SCADA.
 */
export function idProblem(what: string, id: string): string | null {
  if (id === '') return `${what} is empty`;
  if (/[+/#]/.test(id)) return `${what} "${id}" contains a reserved character (+ / #)`;
  if (/[\u0000-\u001f\u007f]/.test(id)) return `${what} contains control characters`;
  if (id.length > 64) return `${what} is longer than 64 characters`;
  return null;
}
