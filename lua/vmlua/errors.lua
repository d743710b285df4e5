-- Errors meant for the user (a wrong definition, a VM that failed) carry
-- their place in the message and are reported without a traceback; any
-- other error is a bug and is reported with one.
local errors = { user = {} }

-- Raises msg as a user error; with a level, prefixes the caller's file:line
-- the way error(msg, level) does.
function errors.raise(msg, level)
  if level then
    local info = debug.getinfo(level + 1, "Sl")
    if info and info.currentline > 0 then
      msg = string.format("%s:%d: %s", info.short_src, info.currentline, msg)
    end
  end
  errors.user[msg] = true
  error(msg, 0)
end

-- The text to report for an error caught by xpcall.
function errors.handler(err)
  if errors.user[err] then return err end
  return debug.traceback(err, 2)
end

return errors
