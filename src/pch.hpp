// Precompiled header for the I/O modules: Asio is the slow part of every build.
#pragma once
// First: it specializes an Asio template that the headers below must not instantiate before.
#include "pgrouter/util/frame_alloc.hpp"
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <spdlog/spdlog.h>
#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>
