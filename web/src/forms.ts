// Form logic without UI: where an API error goes, parsing free-text inputs.
import { ApiError } from './api';

export interface FormErrors {
  fields: Record<string, string>;
  top?: string;
}

/** Whether a problem's `field` (a JSON path like "job.command[0]") belongs to input `name`. */
export function fieldMatches(field: string, name: string): boolean {
  return field === name || field.startsWith(`${name}.`) || field.startsWith(`${name}[`);
}

/** Puts an API error next to the form field it names, or at the top of the form. */
export function errorsFromProblem(err: unknown, fieldNames: readonly string[]): FormErrors {
  if (err instanceof ApiError) {
    const field = err.field;
    if (field) {
      const name = fieldNames.find((n) => fieldMatches(field, n));
      if (name) return { fields: { [name]: err.problem.detail } };
    }
    if (err.notAvailable) return { fields: {}, top: 'Not available yet: the server does not offer this yet.' };
    return { fields: {}, top: err.problem.detail || err.message };
  }
  return { fields: {}, top: err instanceof Error ? err.message : String(err) };
}

/** "KEY=value" lines into an env map; lines without "=" are refused. */
export function parseEnv(text: string): Record<string, string> | string {
  const env: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) return `"${line}" is not KEY=value`;
    env[line.slice(0, eq).trim()] = line.slice(eq + 1);
  }
  return env;
}
