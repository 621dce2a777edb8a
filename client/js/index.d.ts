// Type declarations for flashd-client (index.js).  The protocol objects are
// described in proto/PROTOCOL.md (flashd-protocol(7)); error ids and their
// detail keys come from proto/errors.def through errors.d.ts (generated).

import { EventEmitter } from 'node:events';
import type { ErrorCode, ErrorDetails } from './errors';

export type { ErrorCode, ErrorDetails, CommonDetail } from './errors';

export type DeviceMode = 'listening' | 'dfu' | 'normal' | 'safe' | 'unknown';

/** A DEVICE object. */
export interface Device {
  key: string;
  id: string | null;
  platform: string | null;
  platform_id: number | null;
  mode: DeviceMode;
  present: boolean;
  busy: boolean;
  job: string | null;
  tty: string | null;
  usb: { bus: number; address: number; port: string; vid: string; pid: string } | null;
  os: string | null;
  id_collides?: boolean;
}

/** A module as device-info lists it. */
export interface DeviceModule {
  function: string;
  index: number;
  version: number;
  store: string;
  address: number;
  valid: boolean;
  checked: string[];
  failed_checks: string[];
}

export interface DeviceInfo extends Device {
  modules_known: boolean;
  modules: DeviceModule[];
  /** Present when info() was asked to probe. */
  probe?: { job: string; outcome: string | null };
}

export type JobState =
  | 'queued'
  | 'waiting-for-device'
  | 'switching-mode'
  | 'preflight'
  | 'erasing'
  | 'writing'
  | 'rebooting'
  | 'verifying'
  | 'done'
  | 'failed'
  | 'cancelled'
  | 'interrupted';

export type JobResult = 'done' | 'failed' | 'cancelled' | 'interrupted';

/** An error object as the daemon sends it (also inside job records and events). */
export interface ErrorObject<C extends ErrorCode = ErrorCode> {
  code: C;
  message: string;
  hint: string;
  detail: ErrorDetails[C];
}

/** A JOB object. */
export interface Job {
  id: string;
  state: JobState;
  result: JobResult | null;
  outcome: string | null;
  device: string | null;
  target: { kind: 'any' | 'device' | 'port' | 'usb' | 'platform'; value: string; all: boolean };
  images: Array<{
    name: string;
    sha256: string;
    size: number;
    modules: Array<{
      function: string;
      index: number;
      version: number;
      platform: string;
      platform_id: number;
      start: number;
      end: number;
      description: string;
    }>;
  }>;
  options: { force: boolean; verify: boolean; 'dry-run': boolean; detach: boolean; wait: number | boolean };
  owner: { uid: number; gid: number; pid: number };
  created: number;
  started: number | null;
  ended: number | null;
  transport: string | null;
  progress: { done: number; total: number };
  error: ErrorObject | null;
}

export interface DeviceEvent {
  type: 'event';
  event: 'device-added' | 'device-changed' | 'device-removed';
  device: Device;
}

export interface JobQueuedEvent {
  type: 'event';
  event: 'job-queued' | 'job-started';
  job: string;
  record: Job;
}

/** job-progress: byte progress, state changes, notes. */
export interface JobProgressEvent {
  type: 'event';
  event: 'job-progress';
  job: string;
  state: JobState;
  phase: string;
  done: number;
  total: number;
  percent?: number;
  rate?: number;
  eta_s?: number | null;
  timeout_s?: number;
  note?: string;
  message?: string;
}

export interface JobEndedEvent {
  type: 'event';
  event: 'job-ended';
  job: string;
  result: JobResult;
  outcome: string | null;
  error?: ErrorObject;
  record: Job;
}

export type FlashdEvent = DeviceEvent | JobQueuedEvent | JobProgressEvent | JobEndedEvent;

/** The hello reply. */
export interface ServerInfo {
  type: 'reply';
  protocol: number;
  server: string;
  capabilities: string[];
  transports: string[];
  uid: number;
  limits: Record<string, number>;
}

/** A failure from the catalogue: narrow on `code` (or FlashdError.is(e, code)) for a typed `detail`. */
export class FlashdError<C extends ErrorCode = ErrorCode> extends Error {
  constructor(obj: Partial<ErrorObject<C>> & { code: C });
  readonly code: C;
  readonly hint: string;
  readonly detail: ErrorDetails[C];
  /** flashctl's exit status for this id. */
  readonly exitStatus: number;
  /** The failed job's record, when a job failed. */
  job?: Job;
  /** Every job-ended event of the operation, when a job failed. */
  results?: JobEndedEvent[];
  static is<K extends ErrorCode>(e: unknown, code: K): e is FlashdError<K>;
  static is(e: unknown): e is FlashdError;
}

/** One catalogue entry (errors.js). */
export interface CatalogueEntry {
  exit: number;
  className: string;
  details: Record<string, 's' | 'i' | 'b' | 'a' | 'o'>;
  message: string;
  hint: string;
}

export const CATALOGUE: { readonly [C in ErrorCode]: CatalogueEntry };
export const ERROR_CODES: readonly ErrorCode[];
export const PROTOCOL_VERSION: number;
/** Largest chunk of an upload, in bytes (64 KiB). */
export const CHUNK_BYTES: number;

export interface ConnectOptions {
  /** The socket; default: $FLASHD_SOCKET, /run/flashd/flashd.sock, $XDG_RUNTIME_DIR/flashd.sock. */
  socket?: string;
  /** Sent in hello. */
  clientName?: string;
}

/** A firmware file: a path (read by this module, never by the daemon) or its bytes. */
export type FlashFile = string | { name: string; data: Uint8Array };

export interface FlashTarget {
  device?: string;
  port?: string;
  usb?: string;
  platform?: string;
  all?: boolean;
}

export interface FlashOptions extends FlashTarget {
  force?: boolean;
  verify?: boolean;
  dryRun?: boolean;
  /** Seconds to wait for the device, or true for ever. */
  wait?: number | boolean;
  /** Cancel the job(s) when the connection closes. */
  cancelOnDisconnect?: boolean;
}

export interface UploadProgress {
  file: string;
  sent: number;
  total: number;
}

export interface FlashResult {
  jobs: Job[];
  outcomes: Array<string | null>;
  results: JobEndedEvent[];
}

interface FlashEvents {
  upload: [UploadProgress];
  jobs: [Job[]];
  progress: [JobProgressEvent];
  ended: [JobEndedEvent];
}

/** A flash in progress: await it (or .result); rejects with a FlashdError. */
export interface FlashProgress extends PromiseLike<FlashResult> {
  readonly result: Promise<FlashResult>;
  on<E extends keyof FlashEvents>(event: E, listener: (...args: FlashEvents[E]) => void): this;
  once<E extends keyof FlashEvents>(event: E, listener: (...args: FlashEvents[E]) => void): this;
  catch<T = never>(onrejected?: ((reason: unknown) => T | PromiseLike<T>) | null): Promise<FlashResult | T>;
  /** Cancels the job(s) (their job-ended events still come), or, before they exist, the upload. */
  cancel(): Promise<void>;
}

export class FlashOperation extends EventEmitter implements FlashProgress {
  readonly client: Client;
  jobIds: string[];
  readonly result: Promise<FlashResult>;
  then<T = FlashResult, U = never>(
    onfulfilled?: ((value: FlashResult) => T | PromiseLike<T>) | null,
    onrejected?: ((reason: unknown) => U | PromiseLike<U>) | null,
  ): Promise<T | U>;
  catch<T = never>(onrejected?: ((reason: unknown) => T | PromiseLike<T>) | null): Promise<FlashResult | T>;
  cancel(): Promise<void>;
  on<E extends keyof FlashEvents>(event: E, listener: (...args: FlashEvents[E]) => void): this;
  once<E extends keyof FlashEvents>(event: E, listener: (...args: FlashEvents[E]) => void): this;
}

/** One connection to flashd. */
export class Client extends EventEmitter {
  readonly socketPath: string;
  /** The hello reply. */
  server: ServerInfo | null;
  request(obj: { request: string; [key: string]: unknown }): Promise<Record<string, any>>;
  hello(clientName?: string): Promise<ServerInfo>;
  list(): Promise<Device[]>;
  info(device: string, options?: { probe?: boolean }): Promise<DeviceInfo>;
  jobs(): Promise<Job[]>;
  cancel(job: string): Promise<{ alreadyEnded: boolean; job: Job }>;
  subscribe(what?: { devices?: boolean; jobs?: boolean }): Promise<void>;
  /** Sends bytes in-band; resolves with the upload id once they are verified. */
  upload(name: string, data: Uint8Array, onProgress?: (sent: number, total: number) => void): Promise<string>;
  flash(files: FlashFile | FlashFile[], options?: FlashOptions): FlashOperation;
  close(): void;
  on(event: 'event', listener: (ev: FlashdEvent) => void): this;
  on(event: 'device-added' | 'device-changed' | 'device-removed', listener: (ev: DeviceEvent) => void): this;
  on(event: 'job-progress', listener: (ev: JobProgressEvent) => void): this;
  on(event: 'job-ended', listener: (ev: JobEndedEvent) => void): this;
  on(event: 'job-queued' | 'job-started', listener: (ev: JobQueuedEvent) => void): this;
  on(event: 'close', listener: () => void): this;
}

export interface Watcher extends EventEmitter {
  readonly client: Client;
  /** The devices when the watch began (after subscribing: nothing is missed). */
  readonly devices: Device[];
  close(): void;
  on(event: 'event', listener: (ev: FlashdEvent) => void): this;
  on(event: 'device-added' | 'device-changed' | 'device-removed', listener: (ev: DeviceEvent) => void): this;
  on(event: 'job-progress', listener: (ev: JobProgressEvent) => void): this;
  on(event: 'job-ended', listener: (ev: JobEndedEvent) => void): this;
  on(event: 'job-queued' | 'job-started', listener: (ev: JobQueuedEvent) => void): this;
  on(event: 'close', listener: () => void): this;
}

export function connect(options?: ConnectOptions): Promise<Client>;
export function list(options?: ConnectOptions): Promise<Device[]>;
export function info(device: string, options?: ConnectOptions & { probe?: boolean }): Promise<DeviceInfo>;
export function cancel(job: string, options?: ConnectOptions): Promise<{ alreadyEnded: boolean; job: Job }>;
export function flash(files: FlashFile | FlashFile[], options?: ConnectOptions & FlashOptions): FlashProgress;
export function watch(options?: ConnectOptions & { devices?: boolean; jobs?: boolean }): Promise<Watcher>;
export function socketPath(explicit?: string): string;
