-- Where a sandboxed recipe may reach: paths are resolved with realpath, so
-- that neither ".." nor a symbolic link leads out of the allowed directories.
local core = require "vmlua.core"
local lfs = require "lfs"
local fields = require "vmlua.fields"

local paths = {}

-- The real absolute path of `path` (relative ones against `base`), with
-- every symbolic link followed; a part that does not exist yet (a disk
-- vmlua will create) is appended to its parent's real path.
function paths.resolve(path, base)
  if path:sub(1, 1) ~= "/" then path = (base or lfs.currentdir()) .. "/" .. path end
  path = fields.normalize(path)
  local real = core.realpath(path)
  if real then return real end
  if path == "/" then return "/" end
  local parent, name = path:match("^(.*)/([^/]+)$")
  return fields.normalize(paths.resolve(parent == "" and "/" or parent) .. "/" .. name)
end

-- True when the real path `real` is `dir` or lies under it.
function paths.under(real, dir)
  return dir == "/" or real == dir or real:sub(1, #dir + 1) == dir .. "/"
end

-- The first of `dirs` that holds `path`, or nil; and the path's real form.
function paths.inside(path, dirs, base)
  local real = paths.resolve(path, base)
  for _, dir in ipairs(dirs) do
    if paths.under(real, dir) then return dir, real end
  end
  return nil, real
end

-- The directories as a sentence part: "/a, /b".
function paths.list(dirs)
  return table.concat(dirs, ", ")
end

return paths
