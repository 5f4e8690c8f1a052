/**
 * Daemon configuration (convict): built-in defaults, then the site file (config/site.json or --config),
 * then HCE_* environment variables, then command-line flags. Validation fails before the camera or
 * the broker is touched, and every error names the key, the value and what is allowed.
 */
import convict from 'convict';
import { existsSync } from 'node:fs';
import { SOURCE_KINDS } from '../capture/pipelines.ts';
import { EXECUTION_PROVIDERS } from '../features/session.ts';
import { redactConfig } from '../util/redact.ts';
import type { CommandPolicy } from '../publish/commands.ts';
import type { BrokerConnection } from '../publish/broker-connection.ts';
import { idProblem } from '../publish/sparkplug/topics.ts';

convict.addFormat({
  name: 'positive-number',
  validate(v: unknown) {
    if (typeof v !== 'number' || !(v > 0)) throw new Error('must be a number > 0');
  },
  coerce: (v: unknown) => Number(v),
});

/** null = take the value the bundle was calibrated with; a number must equal it (see bundle scoring settings). */
convict.addFormat({
  name: 'from-bundle',
  validate(v: unknown) {
    if (v !== null && (typeof v !== 'number' || !(v >= 0))) throw new Error('must be null (= from the bundle) or a number >= 0');
  },
  coerce: (v: unknown) => (v === '' || v === 'null' ? null : Number(v)),
});

function sparkplugId(emptyOk: boolean) {
  return (v: unknown) => {
    if (typeof v !== 'string') throw new Error('must be a string');
    if (v === '' && emptyOk) return;
    const p = idProblem('the id', v);
    if (p) throw new Error(`${p} (Sparkplug ids: 1-64 characters, no + / #)`);
  };
}

const SCHEMA = {
  station: {
    doc: 'station name, the second level of every MQTT topic',
    format: (v: unknown) => {
      if (typeof v !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(v)) throw new Error('must be 1-64 characters of letters, digits, _ . -');
    },
    default: 'station-1',
    env: 'HCE_STATION',
    arg: 'station',
  },
  backbone: { doc: 'backbone directory (backbone.json + backbone.onnx)', format: String, default: '', env: 'HCE_BACKBONE', arg: 'backbone' },
  bundle: {
    doc: 'calibration bundle (.hcebundle) to load at the first start; after a successful reload the reloaded one (remembered in state_dir)',
    format: String,
    default: '',
    env: 'HCE_BUNDLE',
    arg: 'bundle',
  },
  bundle_dir: { doc: 'folder of bundles that the reload command picks from by file name ("" = the folder of "bundle")', format: String, default: '', env: 'HCE_BUNDLE_DIR' },
  bundle_max_mb: { doc: 'largest bundle file a reload accepts', format: 'positive-number', default: 2048, env: 'HCE_BUNDLE_MAX_MB' },
  reload_timeout_s: { doc: 'a bundle load that takes longer is abandoned (the worker is restarted with the old bundle)', format: 'positive-number', default: 120, env: 'HCE_RELOAD_TIMEOUT_S' },
  state_dir: { doc: 'daemon state that survives restarts (the active bundle after a reload, the Sparkplug bdSeq)', format: String, default: 'var/state', env: 'HCE_STATE_DIR_DAEMON' },
  source: {
    kind: { doc: 'frame source', format: [...SOURCE_KINDS], default: 'folder', env: 'HCE_SOURCE_KIND', arg: 'source-kind' },
    path: { doc: 'folder/file: image folder or file to replay', format: String, default: '', env: 'HCE_SOURCE_PATH', arg: 'source-path' },
    device: { doc: 'v4l2: video device', format: String, default: '/dev/video0', env: 'HCE_SOURCE_DEVICE' },
    url: { doc: 'rtsp: stream URL', format: String, default: '', env: 'HCE_SOURCE_URL', sensitive: true },
    camera: { doc: 'aravis: camera name ("" = first); nvargus: sensor id', format: String, default: '', env: 'HCE_SOURCE_CAMERA' },
    pipeline: { doc: 'gstreamer: launch string that produces video (an RGB appsink is appended)', format: String, default: '', env: 'HCE_SOURCE_PIPELINE' },
    width: { doc: 'frame width after scaling in the pipeline (0 = native)', format: 'nat', default: 0, env: 'HCE_SOURCE_WIDTH' },
    height: { doc: 'frame height after scaling in the pipeline (0 = native)', format: 'nat', default: 0, env: 'HCE_SOURCE_HEIGHT' },
    fps: { doc: 'folder/file replay rate and videotestsrc rate', format: 'positive-number', default: 5, env: 'HCE_SOURCE_FPS', arg: 'source-fps' },
    loop: { doc: 'folder/file: replay forever', format: Boolean, default: true, env: 'HCE_SOURCE_LOOP', arg: 'source-loop' },
    frame_timeout_ms: { doc: 'no frame for this long = camera lost, reconnect', format: 'nat', default: 5000, env: 'HCE_SOURCE_FRAME_TIMEOUT_MS' },
    max_pixels: {
      doc: 'largest frame or replay image accepted, in pixels (0 = 4x source.width*height when set, else 40 megapixels); larger images are refused before decoding',
      format: 'nat',
      default: 0,
      env: 'HCE_SOURCE_MAX_PIXELS',
    },
  },
  trigger: {
    mode: {
      doc: 'free: inspect the newest frame whenever inference is free (older ones are dropped); mqtt: inspect the next frame after each trigger message; all: inspect every frame in order (replay sources are slowed down instead)',
      format: ['free', 'mqtt', 'all'],
      default: 'free',
      env: 'HCE_TRIGGER_MODE',
      arg: 'trigger-mode',
    },
    max_fps: { doc: 'free-run: at most this many inspections per second (0 = as fast as inference goes)', format: Number, default: 0, env: 'HCE_TRIGGER_MAX_FPS' },
    window_ms: { doc: 'mqtt: a trigger takes the first frame captured after it within this window; none = a NO_FRAME verdict', format: 'nat', default: 2000, env: 'HCE_TRIGGER_WINDOW_MS' },
    queue_max: { doc: 'mqtt: triggers waiting for a frame or for inference; more are dropped (counted, logged)', format: 'nat', default: 64, env: 'HCE_TRIGGER_QUEUE_MAX' },
  },
  mqtt: {
    url: { doc: 'broker URL mqtt://host:1883 or mqtts://host:8883; "" = embedded broker on 127.0.0.1', format: String, default: '', env: 'HCE_MQTT_URL', arg: 'mqtt-url' },
    embedded_port: { doc: 'port of the embedded broker when mqtt.url is ""', format: 'port', default: 1883, env: 'HCE_MQTT_EMBEDDED_PORT' },
    prefix: {
      doc: 'first topic level(s)',
      format: (v: unknown) => {
        if (typeof v !== 'string' || !/^[A-Za-z0-9_.-]{1,64}(\/[A-Za-z0-9_.-]{1,64}){0,4}$/.test(v)) throw new Error('must be 1-5 topic levels of letters, digits, _ . - (no wildcards)');
      },
      default: 'hiercore',
      env: 'HCE_MQTT_PREFIX',
    },
    protocol_version: { doc: '5 (MQTT 5) or 4 (MQTT 3.1.1)', format: [4, 5], default: 5, env: 'HCE_MQTT_PROTOCOL_VERSION' },
    client_id: {
      doc: 'client id ("" = hiercore-edge-<station>-<random>, new per start, so two daemons never take over each other\'s session)',
      format: String,
      default: '',
      env: 'HCE_MQTT_CLIENT_ID',
    },
    username: { doc: 'broker user', format: String, default: '', env: 'HCE_MQTT_USERNAME' },
    password: { doc: 'broker password', format: String, default: '', env: 'HCE_MQTT_PASSWORD', sensitive: true },
    ca: { doc: 'TLS: CA certificate file (PEM)', format: String, default: '', env: 'HCE_MQTT_CA' },
    cert: { doc: 'TLS: client certificate file (PEM)', format: String, default: '', env: 'HCE_MQTT_CERT' },
    key: { doc: 'TLS: client key file (PEM)', format: String, default: '', env: 'HCE_MQTT_KEY', sensitive: true },
    reject_unauthorized: { doc: 'TLS: refuse brokers whose certificate does not verify', format: Boolean, default: true, env: 'HCE_MQTT_REJECT_UNAUTHORIZED' },
    store_dir: { doc: 'on-disk queue of unacknowledged verdicts (survives restarts)', format: String, default: 'var/mqtt-store', env: 'HCE_MQTT_STORE_DIR', arg: 'mqtt-store-dir' },
    keepalive_s: { doc: 'MQTT keepalive', format: 'nat', default: 30, env: 'HCE_MQTT_KEEPALIVE_S' },
    heatmap: { doc: 'publish a JPEG heatmap overlay with each verdict', format: Boolean, default: true, env: 'HCE_MQTT_HEATMAP' },
    ng_image: { doc: 'publish the full JPEG frame of NG and UNKNOWN parts', format: Boolean, default: false, env: 'HCE_MQTT_NG_IMAGE' },
    stats_interval_s: { doc: 'stats message period (0 = off)', format: 'nat', default: 30, env: 'HCE_MQTT_STATS_INTERVAL_S' },
    queue_max: {
      doc: 'verdicts kept on disk while the broker does not acknowledge them; beyond it the oldest are dropped (counted, logged)',
      format: 'nat',
      default: 200000,
      env: 'HCE_MQTT_QUEUE_MAX',
    },
    queue_max_mb: {
      doc: 'size bound of the on-disk verdict queue (also of verdicts held in memory while the disk cannot be written)',
      format: 'positive-number',
      default: 256,
      env: 'HCE_MQTT_QUEUE_MAX_MB',
    },
    queue_fsync: {
      doc: 'flush every queued verdict to the disk before counting it stored: survives a power cut, costs one disk flush per verdict',
      format: Boolean,
      default: true,
      env: 'HCE_MQTT_QUEUE_FSYNC',
    },
  },
  commands: {
    control: {
      doc: 'allow the state-changing commands (reload, pause, resume, activate, rollback, calibrate); read-only ones (snapshot, get_config, get_stats, get_bundles) are always on',
      format: Boolean,
      default: false,
      env: 'HCE_COMMANDS_CONTROL',
    },
    token: { doc: 'when set, state-changing commands must carry MQTT 5 user property token=<this>', format: String, default: '', env: 'HCE_COMMANDS_TOKEN', sensitive: true },
    max_bytes: {
      doc: 'largest command or trigger payload accepted (also the MQTT 5 maximum packet size asked of the broker, plus headers)',
      format: 'nat',
      default: 65536,
      env: 'HCE_COMMANDS_MAX_BYTES',
    },
  },
  runtime: {
    provider: { doc: 'onnxruntime execution provider', format: [...EXECUTION_PROVIDERS], default: 'cpu', env: 'HCE_RUNTIME_PROVIDER', arg: 'provider' },
    threads: { doc: 'onnxruntime intra-op threads (0 = all cores)', format: 'nat', default: 0, env: 'HCE_RUNTIME_THREADS' },
  },
  scoring: {
    reweight_neighbours: {
      doc: 'PatchCore Eq. 7 re-weighting: null = as calibrated (the bundle records it); a value that differs from the bundle is an error, since thresholds depend on it',
      format: 'from-bundle',
      default: null as number | null,
      env: 'HCE_SCORING_REWEIGHT_NEIGHBOURS',
    },
    heatmap_sigma: {
      doc: 'heatmap Gaussian blur sigma: null = as calibrated; a value that differs from the bundle is an error',
      format: 'from-bundle',
      default: null as number | null,
      env: 'HCE_SCORING_HEATMAP_SIGMA',
    },
  },
  sparkplug: {
    enabled: {
      doc: 'also publish as a Sparkplug B Edge Node (spBv1.0/<group_id>/…/<node_id>) on a second MQTT connection to the same broker (mqtt.url, credentials, TLS), beside the JSON topics',
      format: Boolean,
      default: false,
      env: 'HCE_SPARKPLUG_ENABLED',
    },
    group_id: { doc: 'Sparkplug Group ID (no + / #)', format: sparkplugId(false), default: 'hiercore', env: 'HCE_SPARKPLUG_GROUP_ID' },
    node_id: { doc: 'Sparkplug Edge Node ID ("" = station); group_id/node_id must be unique in the plant', format: sparkplugId(true), default: '', env: 'HCE_SPARKPLUG_NODE_ID' },
    device_id: { doc: 'Sparkplug Device ID of the camera', format: sparkplugId(false), default: 'camera', env: 'HCE_SPARKPLUG_DEVICE_ID' },
    host_id: {
      doc: 'Primary Host Application ID (e.g. Ignition MQTT Engine\'s "Primary Host ID"): birth only while spBv1.0/STATE/<host_id> says online; "" = do not wait',
      format: sparkplugId(true),
      default: '',
      env: 'HCE_SPARKPLUG_HOST_ID',
    },
    period_s: { doc: 'NDATA/DDATA: 0 = on every change; otherwise changes are collected and published every period_s seconds', format: 'nat', default: 1, env: 'HCE_SPARKPLUG_PERIOD_S' },
    client_id: { doc: 'MQTT client id of the Sparkplug connection ("" = hiercore-edge-<node_id>-spb; must differ from mqtt.client_id)', format: String, default: '', env: 'HCE_SPARKPLUG_CLIENT_ID' },
  },
  archive: {
    dir: { doc: 'NG/UNKNOWN frames, heatmaps and verdicts are kept here ("" = off)', format: String, default: 'var/archive', env: 'HCE_ARCHIVE_DIR' },
    quota_mb: { doc: 'archive size limit; oldest entries are deleted first', format: 'nat', default: 2048, env: 'HCE_ARCHIVE_QUOTA_MB' },
  },
  metrics: {
    port: { doc: 'Prometheus /metrics and /healthz HTTP port (0 = off)', format: 'port', default: 9464, env: 'HCE_METRICS_PORT', arg: 'metrics-port' },
    host: { doc: 'address the metrics server listens on', format: String, default: '127.0.0.1', env: 'HCE_METRICS_HOST' },
  },
  watchdog: {
    stall_s: { doc: 'stop sending WATCHDOG=1 after this long without an inspected frame (free-run only)', format: 'nat', default: 60, env: 'HCE_WATCHDOG_STALL_S' },
    heartbeat_s: { doc: 'the inference worker is pinged this often; health and WATCHDOG=1 need its answer', format: 'positive-number', default: 2, env: 'HCE_WATCHDOG_HEARTBEAT_S' },
    worker_timeout_s: {
      doc: 'a worker that has not answered a ping or finished a frame for this long is restarted (counted)',
      format: 'positive-number',
      default: 30,
      env: 'HCE_WATCHDOG_WORKER_TIMEOUT_S',
    },
  },
  calibration: {
    engine_config: {
      doc: 'engine settings of on-site calibration (features, coreset, calibration.*), a JSON file like "calibrate --config" takes ("" = config/default.json)',
      format: String,
      default: '',
      env: 'HCE_CALIBRATION_ENGINE_CONFIG',
    },
    images: { doc: 'nominal frames captured from the live camera per calibration run (a recipe may change it)', format: 'nat', default: 60, env: 'HCE_CALIBRATION_IMAGES' },
    policy: {
      doc: 'which frames are captured: count (each new frame), interval (one every interval_s), trigger (one per PLC trigger)',
      format: ['count', 'interval', 'trigger'],
      default: 'count',
      env: 'HCE_CALIBRATION_POLICY',
    },
    interval_s: { doc: 'policy interval: seconds between captured frames', format: Number, default: 1, env: 'HCE_CALIBRATION_INTERVAL_S' },
    holdout: { doc: 'fraction of the captured frames kept out of the bundle to validate it', format: Number, default: 0.2, env: 'HCE_CALIBRATION_HOLDOUT' },
    max_frr: {
      doc: 'validation: a cluster may reject at most this fraction of its held-out good frames, else the bundle is kept but not activated',
      format: Number,
      default: 0.05,
      env: 'HCE_CALIBRATION_MAX_FRR',
    },
    threads: { doc: 'onnxruntime threads of the calibration process (kept low so inspection keeps its cores)', format: 'nat', default: 1, env: 'HCE_CALIBRATION_THREADS' },
    nice: { doc: 'scheduling niceness of the calibration process (0-19)', format: 'nat', default: 10, env: 'HCE_CALIBRATION_NICE' },
    keep_versions: { doc: 'bundle versions kept in the bundle folder (the active and the previous one are never deleted)', format: 'nat', default: 5, env: 'HCE_CALIBRATION_KEEP_VERSIONS' },
    capture_timeout_s: { doc: 'a capture that has not collected its frames within this long fails', format: 'positive-number', default: 900, env: 'HCE_CALIBRATION_CAPTURE_TIMEOUT_S' },
  },
  web: {
    port: { doc: 'local web page (station view, calibration) HTTP port (0 = off)', format: 'port', default: 0, env: 'HCE_WEB_PORT' },
    host: {
      doc: 'address the web page listens on (127.0.0.1 = this machine only; on another address its buttons need commands.token)',
      format: String,
      default: '127.0.0.1',
      env: 'HCE_WEB_HOST',
    },
  },
  log_level: { doc: 'error | warn | info | debug', format: ['error', 'warn', 'info', 'debug'], default: 'info', env: 'HCE_LOG_LEVEL', arg: 'log-level' },
};

/** convict reads env and argv when the schema is instantiated: pass ours so tests and the CLI agree. */
export function daemonSchema(env: NodeJS.ProcessEnv = process.env, args: string[] = []) {
  return convict(SCHEMA, { env, args });
}

export type DaemonConfig = ReturnType<ReturnType<typeof daemonSchema>['getProperties']>;

export class DaemonConfigError extends Error {}

/** The broker login and TLS of both MQTT connections; each brings its own client id. */
export function brokerConnection(c: DaemonConfig, broker: { url: string; protocol: 4 | 5 }, clientId: string): BrokerConnection {
  const m = c.mqtt;
  return {
    url: broker.url,
    protocol_version: broker.protocol,
    client_id: clientId,
    username: m.username,
    password: m.password,
    ca: m.ca,
    cert: m.cert,
    key: m.key,
    reject_unauthorized: m.reject_unauthorized,
    keepalive_s: m.keepalive_s,
  };
}

/** The command rules of both command paths (JSON topics and Sparkplug DCMD). */
export function commandPolicy(c: DaemonConfig): CommandPolicy {
  return { control: c.commands.control, token: c.commands.token, maxBytes: c.commands.max_bytes };
}

/**
 * Loads and validates. `siteFile` = --config; without it config/site.json next to the defaults is
 * used when present. `args` are the command-line flags convict knows (e.g. --station).
 */
export function loadDaemonConfig(opts: { siteFile?: string; defaultSite?: string; args?: string[]; env?: NodeJS.ProcessEnv; overrides?: Record<string, unknown> } = {}) {
  const site = opts.siteFile ?? (opts.defaultSite && existsSync(opts.defaultSite) ? opts.defaultSite : undefined);
  try {
    const conf = daemonSchema(opts.env ?? process.env, opts.args ?? []);
    if (site) {
      if (!existsSync(site)) throw new DaemonConfigError(`config file ${site} does not exist`);
      conf.loadFile(site);
    }
    if (opts.overrides) conf.load(opts.overrides);
    conf.validate({ allowed: 'strict' });
    const p = conf.getProperties() as DaemonConfig;
    checkCombinations(p);
    // convict masks the keys marked sensitive; credentials inside URLs and launch strings too.
    return { config: p, site, toString: () => JSON.stringify(redactConfig(JSON.parse(conf.toString())), null, 2) };
  } catch (e) {
    if (e instanceof DaemonConfigError) throw e;
    throw new DaemonConfigError(`invalid configuration${site ? ` (${site})` : ''}: ${(e as Error).message.replace(/\n/g, '; ')}`);
  }
}

function checkCombinations(p: DaemonConfig): void {
  const need = (cond: boolean, key: string, why: string) => {
    if (!cond) throw new DaemonConfigError(`config "${key}" is required ${why}`);
  };
  const s = p.source;
  if (s.kind === 'folder' || s.kind === 'file') need(s.path !== '', 'source.path', `for source.kind "${s.kind}" (a folder or image file to replay)`);
  if (s.kind === 'rtsp') need(/^rtsps?:\/\//.test(s.url), 'source.url', 'for source.kind "rtsp" (rtsp://host/stream)');
  if (s.kind === 'gstreamer') need(s.pipeline !== '', 'source.pipeline', 'for source.kind "gstreamer"');
  if (s.width > 0 !== s.height > 0) throw new DaemonConfigError(`config "source.width"/"source.height" = ${s.width}/${s.height} is invalid: set both or neither`);
  if (s.frame_timeout_ms < 500) throw new DaemonConfigError(`config "source.frame_timeout_ms" = ${s.frame_timeout_ms} is invalid: at least 500`);
  if (p.mqtt.password && !p.mqtt.username) throw new DaemonConfigError('config "mqtt.password" is set but "mqtt.username" is empty: MQTT sends a password only with a user name');
  if ((p.mqtt.cert === '') !== (p.mqtt.key === '')) throw new DaemonConfigError('config "mqtt.cert" and "mqtt.key" go together: set both for a client certificate, or neither');
  if (p.sparkplug.enabled && p.sparkplug.client_id && p.sparkplug.client_id === p.mqtt.client_id)
    throw new DaemonConfigError('config "sparkplug.client_id" equals "mqtt.client_id": the Sparkplug connection needs its own client id (its Will is the NDEATH)');
  if (p.mqtt.url && !/^(mqtts?|wss?|tcp|tls):\/\//.test(p.mqtt.url))
    throw new DaemonConfigError(`config "mqtt.url" = "${p.mqtt.url}" is invalid: mqtt://host:1883, mqtts://host:8883 (or "" for the embedded broker)`);
}
