//! The rate-limit decision on Redis: one Lua script per request, run atomically by Redis, that
//! reads Redis's own `TIME` (never a replica's clock: replicas' clocks apart cannot move a
//! bucket) and decides every policy of the request together, as the memory buckets do: each
//! key's `used` is computed, and only when every policy allows the request are the keys set.
//! The gateway never reads a bucket and writes it back itself.
//!
//! Sent as EVALSHA, loaded with SCRIPT LOAD when Redis answers NOSCRIPT (after a restart), by
//! `redis::Script`. Keys span several hash slots, so this needs one Redis (with replicas), not
//! Redis Cluster. Scripts replicate by their effects (Redis ≥ 5 by default, always from 7), so a
//! replica of Redis stores the same TATs whatever its clock.

use std::sync::LazyLock;

use super::gcra::Rate;

/// `KEYS[i]`: one bucket per policy; `ARGV[2i-1]`, `ARGV[2i]`: its emission interval and its
/// tolerance (µs). Answers `{allowed, used_1, …, used_n}`. A bucket expires when it is full again.
const DECIDE: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local answer = {1}
local tats = {}
for i = 1, #KEYS do
  local emission = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = now
  local held = redis.call('GET', KEYS[i])
  if held then
    -- Clamped to [now, now + tolerance] of the policy as it is now (as Rate::held): a TAT
    -- further ahead was left by a stricter policy before a reload; it is written back clamped
    -- even if the request is refused, so the next one reads the new policy's window.
    held = tonumber(held) or now
    tat = math.min(math.max(held, now), now + tolerance)
    if held > tat then
      redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.max(1, math.ceil((tat - now) / 1000)))
    end
  end
  tats[i] = tat + emission
  answer[i + 1] = tats[i] - now
  if tats[i] - now > tolerance then
    answer[1] = 0
  end
end
if answer[1] == 1 then
  for i = 1, #KEYS do
    redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', math.ceil((tats[i] - now) / 1000))
  end
end
return answer
";

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(DECIDE));

/// The script's invocation for `keys` (already prefixed) with their rates.
pub fn invocation<'a>(keys: &[(String, Rate)]) -> redis::ScriptInvocation<'a> {
    let mut invocation = SCRIPT.prepare_invoke();
    for (key, rate) in keys {
        invocation.key(key.as_str());
        invocation.arg(rate.emission_us).arg(rate.tolerance_us);
    }
    invocation
}

/// The script's answer, read: each key's `used`, in order; `None` when it is not the shape the
/// script gives (then the request is decided locally, never waved through).
pub fn read_answer(answer: &[i64], keys: usize) -> Option<Vec<u64>> {
    if answer.len() != keys + 1 {
        return None;
    }
    answer[1..]
        .iter()
        .map(|used| u64::try_from(*used).ok())
        .collect()
}
