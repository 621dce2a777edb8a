// Generated from proto/errors.def by tools/gen-errors.js: do not edit.

/** Every catalogue id (proto/errors.def), as the daemon and flashctl use it. */
export type ErrorCode =
  | "usage"
  | "bad-request"
  | "file-unreadable"
  | "image-not-a-module"
  | "image-corrupt"
  | "image-truncated"
  | "image-unsupported"
  | "bundle-corrupt"
  | "bundle-too-many-entries"
  | "bundle-too-large"
  | "bundle-compression-ratio"
  | "bundle-unsafe-name"
  | "bundle-no-application"
  | "bundle-several-applications"
  | "bundle-asset-mismatch"
  | "wrong-platform"
  | "wrong-slot"
  | "image-too-large"
  | "dependency-unmet"
  | "not-flashable-here"
  | "assets-not-flashable"
  | "ncp-not-updatable"
  | "device-protected"
  | "device-not-found"
  | "ambiguous-target"
  | "device-gone"
  | "device-busy"
  | "permission-denied"
  | "device-rejected"
  | "booted-invalid"
  | "asset-not-stored"
  | "request-unsupported"
  | "timed-out"
  | "transfer-failed"
  | "cancelled"
  | "interrupted"
  | "dfu-descriptor-invalid"
  | "outside-memory-map"
  | "layout-unknown"
  | "upload-checksum-mismatch"
  | "upload-too-large"
  | "upload-invalid"
  | "upload-not-found"
  | "too-many-uploads"
  | "job-not-found"
  | "not-allowed"
  | "too-many-jobs"
  | "too-many-clients"
  | "history-unavailable"
  | "rule-not-found"
  | "rule-invalid"
  | "rule-conflict"
  | "rule-quota-exceeded"
  | "hook-not-allowed"
  | "mqtt-config"
  | "broker-unreachable"
  | "daemon-unreachable"
  | "internal"
  | "out-of-memory";

/** Facts any error may carry. */
export interface CommonDetail {
  file?: string;
  device?: string;
  job?: string;
  port?: string;
  platform?: string;
}

/** The typed `detail` of each catalogue id (keys declared in proto/errors.def). */
export interface ErrorDetails {
  "usage": CommonDetail & { argument?: string };
  "bad-request": CommonDetail & { reason?: string; request?: string; field?: string; limit?: number };
  "file-unreadable": CommonDetail & { errno?: number; reason?: string; size?: number; limit?: number };
  "image-not-a-module": CommonDetail & { size?: number; reason?: string };
  "image-corrupt": CommonDetail & { stored_crc?: string; computed_crc?: string; module?: number; offset?: number; reason?: string };
  "image-truncated": CommonDetail & { size?: number; expected_size?: number; module?: number };
  "image-unsupported": CommonDetail & { flags?: number; module_function?: string; reason?: string };
  "bundle-corrupt": CommonDetail & { entry?: string; reason?: string; zip_error?: number };
  "bundle-too-many-entries": CommonDetail & { entries?: number; limit?: number };
  "bundle-too-large": CommonDetail & { size?: number; limit?: number; entry?: string };
  "bundle-compression-ratio": CommonDetail & { entry?: string; compressed?: number; uncompressed?: number; limit?: number };
  "bundle-unsafe-name": CommonDetail & { entry?: string; reason?: string };
  "bundle-no-application": CommonDetail & { entries?: unknown[] };
  "bundle-several-applications": CommonDetail & { applications?: unknown[] };
  "bundle-asset-mismatch": CommonDetail & { asset?: string; problem?: string; expected_sha256?: string; sha256?: string; problems?: number };
  "wrong-platform": CommonDetail & { image_platform?: string; image_platform_id?: number; device_platform?: string; device_platform_id?: number; system_error?: string; device_code?: number; request?: string };
  "wrong-slot": CommonDetail & { module_function?: string; module_index?: number; start?: number; end?: number; slot_start?: number; slot_end?: number; device_os?: string };
  "image-too-large": CommonDetail & { size?: number; limit?: number; slot_start?: number; slot_end?: number };
  "dependency-unmet": CommonDetail & { required_function?: string; required_index?: number; required_version?: number; required_release?: string; installed_version?: number; installed_release?: string; module_function?: string; module_index?: number; module_version?: number; check?: string; broken_module?: string; system_error?: string; device_code?: number; request?: string };
  "not-flashable-here": CommonDetail & { module_function?: string; transport?: string; reason?: string };
  "assets-not-flashable": CommonDetail & { assets?: number; bytes?: number; reason?: string; transport?: string; platform?: string; device_os?: string; file?: string; asset?: string; limit?: number };
  "ncp-not-updatable": CommonDetail & { platform?: string; platform_id?: number; device_os?: string; reason?: string; file?: string };
  "device-protected": CommonDetail & { protection?: string; reason?: string; dfu_state?: number; dfu_status?: number; address?: number; module_version?: number; minimum_version?: number; system_error?: string; device_code?: number; request?: string };
  "device-not-found": CommonDetail & { target?: string; waited_s?: number };
  "ambiguous-target": CommonDetail & { candidates?: unknown[]; target?: string };
  "device-gone": CommonDetail & { phase?: string; block?: number; bytes_sent?: number; address?: number; chunk?: number; alt?: number; usb_error?: string; usb_trace?: unknown[]; dfu_state?: number; dfu_status?: number; request?: string; step?: string; written?: unknown[]; not_written?: unknown[]; waited_s?: number };
  "device-busy": CommonDetail & { holder?: string; holder_pid?: number; port?: string; job_id?: string; system_error?: string; device_code?: number; request?: string; service_status?: string; waited_ms?: number; busy_replies?: number; reason?: string };
  "permission-denied": CommonDetail & { path?: string; errno?: number; operation?: string };
  "device-rejected": CommonDetail & { cause?: string; device_code?: number; device_text?: string; dfu_state?: number; dfu_status?: number; diagnosis?: string; phase?: string; alt?: number; address?: number; chunk?: number; dfu_state_name?: string; dfu_status_name?: string; usb_trace?: unknown[]; block?: number; bytes_sent?: number; system_error?: string; request?: string };
  "booted-invalid": CommonDetail & { failed_checks?: unknown[]; mode?: string; module_function?: string; invalid_modules?: unknown[] };
  "asset-not-stored": CommonDetail & { asset?: string; sha256?: string; file?: string; reason?: string };
  "request-unsupported": CommonDetail & { request?: string; request_type?: number; system_error?: string; device_code?: number; device_os?: string; reason?: string };
  "timed-out": CommonDetail & { target?: string; phase?: string; timeout_ms?: number; block?: number; bytes_sent?: number; waited_s?: number; address?: number; chunk?: number; alt?: number; usb_trace?: unknown[]; dfu_state?: number; dfu_status?: number; system_error?: string; device_code?: number; request?: string };
  "transfer-failed": CommonDetail & { phase?: string; block?: number; bytes_sent?: number; address?: number; chunk?: number; alt?: number; dfu_state?: number; dfu_status?: number; usb_error?: string; reason?: string; dfu_state_name?: string; dfu_status_name?: string; usb_trace?: unknown[]; system_error?: string; device_code?: number; request?: string; service_status?: string };
  "cancelled": CommonDetail & { phase?: string; by_uid?: number; device_state?: string; block?: number; bytes_sent?: number; address?: number; chunk?: number; alt?: number; usb_trace?: unknown[] };
  "interrupted": CommonDetail & { phase?: string; reason?: string };
  "dfu-descriptor-invalid": CommonDetail & { alt?: number; descriptor?: string; reason?: string; offset?: number };
  "outside-memory-map": CommonDetail & { alt?: number; address?: number; start?: number; end?: number; region?: string; attributes?: string; needed?: string };
  "layout-unknown": CommonDetail & { reason?: string; address?: number; module_function?: string; candidates?: unknown[] };
  "upload-checksum-mismatch": CommonDetail & { upload?: string; size?: number; expected_sha256?: string; computed_sha256?: string };
  "upload-too-large": CommonDetail & { size?: number; limit?: number };
  "upload-invalid": CommonDetail & { reason?: string; upload?: string; offset?: number; expected_offset?: number; size?: number; limit?: number };
  "upload-not-found": CommonDetail & { upload?: string; idle_timeout_ms?: number };
  "too-many-uploads": CommonDetail & { limit?: number; kind?: string; uid?: number };
  "job-not-found": CommonDetail & { job_id?: string };
  "not-allowed": CommonDetail & { operation?: string; uid?: number; owner_uid?: number; admin_group?: string };
  "too-many-jobs": CommonDetail & { limit?: number; uid?: number; kind?: string };
  "too-many-clients": CommonDetail & { limit?: number; uid?: number };
  "history-unavailable": CommonDetail & { reason?: string; path?: string; sqlite_error?: string };
  "rule-not-found": CommonDetail & { rule?: string };
  "rule-invalid": CommonDetail & { reason?: string; field?: string; path?: string; line?: number; rule?: string };
  "rule-conflict": CommonDetail & { rules?: unknown[]; priority?: number; port?: string };
  "rule-quota-exceeded": CommonDetail & { uid?: number; limit?: number; rules?: number; bytes?: number };
  "hook-not-allowed": CommonDetail & { reason?: string; field?: string };
  "mqtt-config": CommonDetail & { key?: string; value?: string; reason?: string };
  "broker-unreachable": CommonDetail & { broker?: string; reason?: string };
  "daemon-unreachable": CommonDetail & { socket?: string; errno?: number };
  "internal": CommonDetail & { reason?: string; errno?: number };
  "out-of-memory": CommonDetail & { size?: number };
}

/** Exit status per id, as flashctl exits. */
export type ExitStatus = { [C in ErrorCode]: number };
