-- wrk script for scripts/bench-wrk.sh: POST /orders with a place body like orderflow-bench's (two lines), a
-- unique orderId per request, and the bearer token of customer cust-0 (WRK_TOKEN). WRK_RUN keeps the order ids
-- of different runs against one service apart. No response() function: wrk then skips handing every answer
-- to Lua and only counts the non-2xx ones.
local token = os.getenv("WRK_TOKEN") or ""
local run = os.getenv("WRK_RUN") or "w"
local threads = 0

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

local counter = 0
local prefix
local headers

function init(args)
  prefix = run .. "-" .. tostring(tid or 0) .. "-"
  headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }
end

function request()
  counter = counter + 1
  local body = '{"orderId":"' .. prefix .. counter .. '","customerId":"cust-0","currency":"EUR","items":['
    .. '{"sku":"MUG-01","name":"Blue ceramic mug","quantity":2,"unitPrice":1250},'
    .. '{"sku":"TEA-01","name":"Green tea loose leaf","quantity":1,"unitPrice":899}]}'
  return wrk.format("POST", "/orders", headers, body)
end
