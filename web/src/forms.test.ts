import { describe, expect, it } from 'vitest';
import { ApiError, IdempotencyKeys, newUuid } from './api';
import { errorsFromProblem, fieldMatches, parseEnv } from './forms';

const problem = (status: number, code: string, detail: string, field?: string) =>
  new ApiError(status, { type: `https://capex.dev/problems/${code}`, title: 'x', status, detail, code, field });

describe('errorsFromProblem', () => {
  it('puts a field error next to the input of that name', () => {
    const err = problem(422, 'too_many_decimals', 'price has more than 6 decimal places', 'price');
    expect(errorsFromProblem(err, ['gpus', 'price'])).toEqual({
      fields: { price: 'price has more than 6 decimal places' },
    });
  });

  it('matches nested JSON paths to their input', () => {
    expect(fieldMatches('job.command[0]', 'job.command')).toBe(true);
    expect(fieldMatches('job.env.FOO', 'job.env')).toBe(true);
    expect(fieldMatches('pricey', 'price')).toBe(false);
    const err = problem(422, 'invalid_command', 'command must not be empty', 'job.command[0]');
    expect(errorsFromProblem(err, ['price', 'job.command']).fields).toEqual({
      'job.command': 'command must not be empty',
    });
  });

  it('puts errors about other fields, or none, at the top', () => {
    expect(errorsFromProblem(problem(409, 'conflict', 'already used', 'Idempotency-Key'), ['amount'])).toEqual({
      fields: {},
      top: 'already used',
    });
    expect(errorsFromProblem(problem(401, 'invalid_credentials', 'wrong email or password'), ['email'])).toEqual({
      fields: {},
      top: 'wrong email or password',
    });
    expect(errorsFromProblem(new Error('boom'), []).top).toBe('boom');
  });

  it('says "not available yet" for endpoints the server does not have', () => {
    const err = problem(404, 'no_such_route', 'no API route matches this path and method');
    expect(err.notAvailable).toBe(true);
    expect(errorsFromProblem(err, []).top).toMatch(/not available yet/i);
    expect(problem(404, 'not_found', 'order not found').notAvailable).toBe(false);
    expect(problem(501, 'not_implemented', 'later').notAvailable).toBe(true);
  });
});

describe('parseEnv', () => {
  it('reads KEY=value lines', () => {
    expect(parseEnv('A=1\n\n# note\nB = two=2 \n')).toEqual({ A: '1', B: ' two=2' });
    expect(parseEnv('')).toEqual({});
  });

  it('refuses lines without a key', () => {
    expect(typeof parseEnv('JUSTTEXT')).toBe('string');
    expect(typeof parseEnv('=x')).toBe('string');
  });
});

describe('IdempotencyKeys', () => {
  it('reuses the key for a retried identical body and changes it otherwise', () => {
    const keys = new IdempotencyKeys();
    const a = keys.keyFor({ amount: '1' });
    expect(keys.keyFor({ amount: '1' })).toBe(a);
    const b = keys.keyFor({ amount: '2' });
    expect(b).not.toBe(a);
    keys.done();
    expect(keys.keyFor({ amount: '2' })).not.toBe(b);
  });

  it('makes v4 UUIDs', () => {
    expect(newUuid()).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });
});
