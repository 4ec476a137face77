//! Cool-downs shared by every replica: when one replica rests a deployment (failures, a 429) or
//! an upstream credential (refused, rate limited), the others rest it too, for what is left of
//! the same rest. One hash in Redis holds, per resting thing, when its rest ends on Redis's own
//! clock; each replica syncs with it periodically in one script call that adds its own new rests
//! (a rest only ever grows) and reads everyone's, dropping those that are over.

use crate::conn::{Failure, Redis};
use redis::Script;
use std::time::Duration;

/// Adds `ARGV` (field, rest ms)* as `now + ms` where that is later than what the field holds,
/// then returns every (field, ms left) still resting, deleting the ones that are over, and
/// keeps the hash no longer than its longest rest.
const SYNC: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #ARGV, 2 do
  local ends = now + tonumber(ARGV[i + 1])
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if ends > cur then redis.call('HSET', KEYS[1], ARGV[i], ends) end
end
local all = redis.call('HGETALL', KEYS[1])
local out, longest = {}, 0
for i = 1, #all, 2 do
  local left = tonumber(all[i + 1]) - now
  if left > 0 then
    out[#out + 1] = all[i]
    out[#out + 1] = left
    if left > longest then longest = left end
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
if longest > 0 then redis.call('PEXPIRE', KEYS[1], longest) end
return out
";

/// The shared board of rests.
pub struct RestBoard {
    redis: Redis,
    key: String,
    script: Script,
}

impl RestBoard {
    /// The board in `redis` (one hash under the key prefix).
    pub fn new(redis: Redis) -> RestBoard {
        RestBoard {
            key: redis.key("rests"),
            redis,
            script: Script::new(SYNC),
        }
    }

    /// Publishes `news` (what this replica rested since the last sync, with the rest left) and
    /// returns every rest on the board with what is left of it. Within the Redis deadline.
    pub async fn sync(
        &self,
        news: &[(String, Duration)],
    ) -> Result<Vec<(String, Duration)>, Failure> {
        let (script, key) = (&self.script, &self.key);
        let board: Vec<(String, i64)> = self
            .redis
            .run(|mut conn| {
                let mut call = script.prepare_invoke();
                call.key(key);
                for (field, rest) in news {
                    call.arg(field)
                        .arg(u64::try_from(rest.as_millis()).unwrap_or(u64::MAX).max(1));
                }
                async move {
                    let v: Vec<redis::Value> = call.invoke_async(&mut conn).await?;
                    // (field, ms left)*: fields are strings, numbers integers.
                    let mut out = Vec::with_capacity(v.len() / 2);
                    let mut it = v.into_iter();
                    while let (Some(f), Some(ms)) = (it.next(), it.next()) {
                        out.push((redis::from_redis_value(f)?, redis::from_redis_value(ms)?));
                    }
                    Ok(out)
                }
            })
            .await?;
        Ok(board
            .into_iter()
            .filter_map(|(f, ms)| Some((f, Duration::from_millis(u64::try_from(ms).ok()?))))
            .collect())
    }
}
