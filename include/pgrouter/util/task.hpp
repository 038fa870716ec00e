#pragma once
// The coroutine type of everything that runs on a worker's io_context.
//
// Asio's default awaitable<T> carries an any_io_executor: every co_await of an I/O
// operation then copies, type-erases and re-dispatches through it. Naming the
// io_context's own executor type removes that from each step of the hot path
// (a transaction makes a dozen of them). Discovery, which runs on strands, keeps
// Asio's default.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>

namespace pgrouter {

using IoExecutor = boost::asio::io_context::executor_type;

template <class T = void>
using Task = boost::asio::awaitable<T, IoExecutor>;

// A steady-clock timer on the same executor type (Timer's any_io_executor
// would type-erase every wait again).
using Timer = boost::asio::basic_waitable_timer<std::chrono::steady_clock, boost::asio::wait_traits<std::chrono::steady_clock>,
                                                IoExecutor>;

// The completion token of a Task: (error_code, ...) as a tuple, never an exception.
inline constexpr auto task_token = boost::asio::as_tuple(boost::asio::use_awaitable_t<IoExecutor>{});

}  // namespace pgrouter
