-- Every environment variable vmlua reads is documented, in the README's
-- "Environment" section and in vmlua(1).
local function read(path)
  local f = assert(io.open(path))
  local text = f:read("a")
  f:close()
  return text
end

describe("the environment variables", function()
  it("that the code reads are all in the README and the man page", function()
    local names, seen = {}, {}
    local p = assert(io.popen("grep -rhoE '(getenv|env)\\(\"[A-Z_]+\"\\)' lua src"))
    for name in p:read("a"):gmatch('"([A-Z_]+)"') do
      if not seen[name] then
        seen[name] = true
        names[#names + 1] = name
      end
    end
    p:close()
    table.sort(names)
    assert.is_true(seen.VMLUA_RUNTIME_DIR and seen.VMLUA_DEBUG and seen.HOME)
    local readme = read("README.md"):match("\n## Environment\n(.-)\n## ")
    assert(readme, "the README has no Environment section")
    local man = read("man/vmlua.1"):match("\n%.SH ENVIRONMENT\n(.-)\n%.SH ")
    local missing = {}
    for _, name in ipairs(names) do
      if not readme:find("`" .. name .. "`", 1, true) then missing[#missing + 1] = "README: " .. name end
      if not man:find("\n.B " .. name .. "\n", 1, true) then missing[#missing + 1] = "vmlua.1: " .. name end
    end
    assert.are.same({}, missing)
  end)
end)
