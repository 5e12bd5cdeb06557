//! The rate-limit decision on Redis: one Lua script per request, run atomically by Redis, that
//! reads Redis's own `TIME` (never a replica's clock: replicas' clocks apart cannot move a
//! window) and decides every policy of the request together, as the memory buckets do: each
//! key is trimmed and observed, and only when every policy admits the request is it counted in
//! each. The gateway never reads a log and writes it back itself.
//!
//! A key is a list of admission times (µs, oldest first), at most `requests` long: `RPUSH` to
//! count, `LPOP` what left the window, so a request costs O(1) commands amortized whatever the
//! policy's size, and `PEXPIRE window` after each admission drops a key whose entries all left
//! (Redis memory: one short integer string per admission in the window). A smoothing policy's
//! GCRA TAT rides on the newest entry (`time:tat`), so a key stays one list; τ below the window
//! (see [`super::window::Limit::new`]) means a log trimmed to nothing held a full bucket.
//!
//! Sent as EVALSHA, loaded with SCRIPT LOAD when Redis answers NOSCRIPT (after a restart), by
//! `redis::Script`. Keys span several hash slots, so this needs one Redis (with replicas), not
//! Redis Cluster. Scripts replicate by their effects (Redis ≥ 5 by default, always from 7), so a
//! replica of Redis stores the same times whatever its clock.

use std::sync::LazyLock;

use super::window::{Limit, Observed};

/// `KEYS[i]`: one log per policy; `ARGV[4i-3..4i]`: its requests, window (µs), and GCRA
/// emission interval and tolerance (µs; 0 and 0 without smoothing). Answers
/// `{admitted, in_window_1, oldest_leaves_in_1, used_1, …}` (`used` −1 without smoothing).
const DECIDE: &str = r"
local clock = redis.call('TIME')
local clock_now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local admitted = 1
local answer = {0}
local at = {}
local tats = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local requests = tonumber(ARGV[4 * i - 3])
  local window = tonumber(ARGV[4 * i - 2])
  local emission = tonumber(ARGV[4 * i - 1])
  local tolerance = tonumber(ARGV[4 * i])
  -- Never before the newest entry (Redis's clock may step back): a log stays in order.
  local now = clock_now
  local tat = nil
  -- A key of another shape (the GCRA build before the sliding window stored a string) is
  -- dropped rather than failing every decision with WRONGTYPE until it expires: a fleet being
  -- upgraded keeps counting on Redis, from an empty window.
  if redis.call('TYPE', key).ok ~= 'list' and redis.call('EXISTS', key) == 1 then
    redis.call('DEL', key)
  end
  local newest = redis.call('LINDEX', key, -1)
  if newest then
    local time, carried = string.match(newest, '^(%d+):?(%d*)$')
    time = tonumber(time)
    if time and time > now then now = time end
    if carried and carried ~= '' then tat = tonumber(carried) end
  end
  local excess = redis.call('LLEN', key) - requests
  if excess > 0 then
    -- A reload tightened the policy: the oldest beyond `requests` decide nothing.
    redis.call('LTRIM', key, excess, -1)
  end
  local count = redis.call('LLEN', key)
  local oldest_leaves_in = 0
  while count > 0 do
    local oldest = tonumber(string.match(redis.call('LINDEX', key, 0), '^%d+')) or 0
    if oldest + window > now then
      oldest_leaves_in = oldest + window - now
      break
    end
    redis.call('LPOP', key)
    count = count - 1
  end
  local used = -1
  if emission > 0 then
    -- The TAT read clamped to [now, now + tolerance] of the policy as it is now (Rate::held).
    local held = now
    if tat then held = math.min(math.max(tat, now), now + tolerance) end
    used = held + emission - now
    tats[i] = held + emission
    if used > tolerance then admitted = 0 end
    if tat and tat > held and count > 0 then
      -- A TAT left by a stricter policy, brought back for good even if refused (Rate::capped).
      local time = string.match(redis.call('LINDEX', key, -1), '^%d+')
      redis.call('LSET', key, -1, time .. ':' .. string.format('%.0f', held))
    end
  end
  if count >= requests then admitted = 0 end
  at[i] = now
  answer[3 * i - 1] = count
  answer[3 * i] = oldest_leaves_in
  answer[3 * i + 1] = used
end
if admitted == 1 then
  for i = 1, #KEYS do
    local entry = string.format('%.0f', at[i])
    if tats[i] then entry = entry .. ':' .. string.format('%.0f', tats[i]) end
    redis.call('RPUSH', KEYS[i], entry)
    redis.call('PEXPIRE', KEYS[i], math.ceil(tonumber(ARGV[4 * i - 2]) / 1000))
  end
end
answer[1] = admitted
return answer
";

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(DECIDE));

/// The script's invocation for `keys` (already prefixed) with their limits.
pub fn invocation<'a>(keys: &[(String, Limit)]) -> redis::ScriptInvocation<'a> {
    let mut invocation = SCRIPT.prepare_invoke();
    for (key, limit) in keys {
        let (emission, tolerance) = limit
            .smoothing
            .map_or((0, 0), |rate| (rate.emission_us, rate.tolerance_us));
        invocation.key(key.as_str());
        invocation
            .arg(limit.requests)
            .arg(limit.window_us)
            .arg(emission)
            .arg(tolerance);
    }
    invocation
}

/// The script's answer, read: what each key held, in order; `None` when it is not the shape
/// the script gives (then the request is decided locally, never waved through).
pub fn read_answer(answer: &[i64], keys: usize) -> Option<Vec<Observed>> {
    if answer.len() != 1 + 3 * keys {
        return None;
    }
    answer[1..]
        .chunks_exact(3)
        .map(|observed| {
            Some(Observed {
                in_window: u64::try_from(observed[0]).ok()?,
                oldest_leaves_in_us: u64::try_from(observed[1]).ok()?,
                smoothing_used: u64::try_from(observed[2]).ok(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_of_another_shape_is_refused_rather_than_guessed() {
        assert_eq!(read_answer(&[1, 2, 3], 1), None);
        assert_eq!(read_answer(&[1, -2, 3, -1], 1), None, "a negative count");
        assert_eq!(
            read_answer(&[0, 10, 400, -1, 1, 5, 7], 2),
            Some(vec![
                Observed {
                    in_window: 10,
                    oldest_leaves_in_us: 400,
                    smoothing_used: None
                },
                Observed {
                    in_window: 1,
                    oldest_leaves_in_us: 5,
                    smoothing_used: Some(7)
                },
            ])
        );
    }
}
