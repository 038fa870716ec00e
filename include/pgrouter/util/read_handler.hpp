#pragma once
// A completion handler of signature void(error_code, std::size_t) kept until a read
// that someone else performs completes (a coroutine waiting for the client read that
// the session's callback started, or for the idle watch's read of a server).
//
// It stores the handler in place: asio::any_completion_handler allocates for every
// handler and type-erases its executor again, on every transaction. Only handlers that
// fit (an Asio coroutine's handler is two pointers) are accepted, checked at compile time.
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace pgrouter::util {

class ReadHandler {
public:
    ReadHandler() = default;
    template <class H, class = std::enable_if_t<!std::is_same_v<std::decay_t<H>, ReadHandler>>>
    explicit ReadHandler(H&& h) {
        using D = std::decay_t<H>;
        static_assert(sizeof(D) <= kSize && alignof(D) <= kAlign, "handler too big to keep in place");
        static_assert(std::is_nothrow_move_constructible_v<D>);
        new (buf_) D(std::forward<H>(h));
        ops_ = &kOps<D>;
    }
    ReadHandler(ReadHandler&& o) noexcept { take(o); }
    ReadHandler& operator=(ReadHandler&& o) noexcept {
        if (this != &o) {
            reset();
            take(o);
        }
        return *this;
    }
    ReadHandler(const ReadHandler&) = delete;
    ReadHandler& operator=(const ReadHandler&) = delete;
    ~ReadHandler() { reset(); }

    explicit operator bool() const { return ops_ != nullptr; }

    // Empties this holder, then calls the handler (which may store a new one here).
    void operator()(boost::system::error_code ec, std::size_t n) && {
        const Ops* ops = std::exchange(ops_, nullptr);
        ops->call(buf_, ec, n);
    }

    // Drops the handler without calling it (an Asio coroutine waiting on it is destroyed).
    void reset() noexcept {
        if (const Ops* ops = std::exchange(ops_, nullptr)) ops->destroy(buf_);
    }

private:
    static constexpr std::size_t kSize = 32;
    static constexpr std::size_t kAlign = alignof(std::max_align_t);

    struct Ops {
        void (*call)(void* self, boost::system::error_code ec, std::size_t n);
        void (*move)(void* from, void* to) noexcept;
        void (*destroy)(void* self) noexcept;
    };
    template <class D>
    static constexpr Ops kOps{
        [](void* self, boost::system::error_code ec, std::size_t n) {
            D h(std::move(*static_cast<D*>(self)));  // out of the buffer first: it may be refilled
            static_cast<D*>(self)->~D();
            std::move(h)(ec, n);
        },
        [](void* from, void* to) noexcept {
            new (to) D(std::move(*static_cast<D*>(from)));
            static_cast<D*>(from)->~D();
        },
        [](void* self) noexcept { static_cast<D*>(self)->~D(); },
    };

    void take(ReadHandler& o) noexcept {
        if (!o.ops_) return;
        o.ops_->move(o.buf_, buf_);
        ops_ = std::exchange(o.ops_, nullptr);
    }

    alignas(kAlign) unsigned char buf_[kSize];
    const Ops* ops_ = nullptr;
};

}  // namespace pgrouter::util
