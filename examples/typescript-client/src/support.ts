// Test plumbing shared by e2e.ts and swagger-ui.test.ts: configuration, HS256 tokens and a
// tiny check runner that prints `N passed, M failed`. Nothing here is specific to the API.
import { createHmac, randomBytes } from "node:crypto";

/** Reads a required environment variable or stops with a message saying what to set. */
export function requireEnv(name: string, hint: string): string {
  const value = process.env[name];
  if (!value) {
    console.error(`error: ${name} is not set (${hint}); see README.md`);
    process.exit(2);
  }
  return value;
}

export function config() {
  const baseUrl = requireEnv("TODO_BASE_URL", "the server's URL, e.g. http://127.0.0.1:8080").replace(/\/+$/, "");
  const secret = requireEnv("TODO_JWT_SECRET", "the HS256 secret the server was started with");
  return { baseUrl, secret };
}

const b64url = (data: string | Buffer) => Buffer.from(data).toString("base64url");

/**
 * Signs a JWT with HS256 using node:crypto only (no dependency). The server reads the user id
 * from `sub` and requires `exp`. `claims` overrides or removes (undefined) claims; `secret` can
 * be a wrong one to test 401s.
 */
export function mintToken(secret: string, sub: string, claims: Record<string, unknown> = {}): string {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const payload = b64url(JSON.stringify({ sub, iat: now, exp: now + 15 * 60, ...claims }));
  const signature = createHmac("sha256", secret).update(`${header}.${payload}`).digest("base64url");
  return `${header}.${payload}.${signature}`;
}

/** A fresh user id for this run, so reruns against the same database start from nothing. */
export function uniqueUserId(prefix: string): string {
  return `${prefix}${randomBytes(6).toString("hex")}`;
}

/** Runs named checks, keeps going after a failure, and reports at the end. */
export class Checks {
  passed = 0;
  failed = 0;

  async check(name: string, fn: () => unknown): Promise<void> {
    try {
      await fn();
      this.passed++;
      console.log(`  ok   ${name}`);
    } catch (err) {
      this.failed++;
      // The message, then where in the test it failed (frames of the test files, not helpers).
      const message = err instanceof Error ? err.message : String(err);
      const where = (err instanceof Error ? (err.stack ?? "") : "")
        .split("\n")
        .filter((line) => /^\s+at .*\/src\/(?!support\.ts)/.test(line))
        .slice(0, 2)
        .map((line) => line.trim());
      const text = [...message.split("\n").filter((line) => line.trim() !== ""), ...where];
      console.log(`  FAIL ${name}\n       ${text.slice(0, 20).join("\n       ")}`);
    }
  }

  section(title: string): void {
    console.log(`\n${title}`);
  }

  /** Prints the one-line summary and sets the exit code (non-zero on any failure). */
  finish(): void {
    console.log(`\n${this.passed} passed, ${this.failed} failed`);
    process.exitCode = this.failed === 0 && this.passed > 0 ? 0 : 1;
  }
}
