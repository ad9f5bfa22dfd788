// C++ with one call site whose blocks end in two leak kinds: shop::OrderBook::add makes 900
// orders (`new Order`, 32 bytes each, one stack); the book keeps every third (still reachable,
// through the global book), main deletes every third and loses every third (definitely lost).
// Each order's quantities grow by std::vector<int>::push_back (arrays of 4, 8 and 16 bytes, the
// first two freed as it grows): the last array of a kept order is still reachable, of a lost
// one indirectly lost. Frames of templates and parameter lists for the short names of folded
// and svg: `std::vector<int, std::allocator<int> >::push_back(int const&)`.
#include <vector>

namespace shop {

struct Order {
    long id;
    std::vector<int> quantities;
};

class OrderBook {
  public:
    __attribute__((noinline)) Order *add(int id);
    std::vector<Order *> kept;
};

Order *OrderBook::add(int id) {
    Order *order = new Order{id, {}};
    for (int quantity = 1; quantity <= 3; quantity++) {
        order->quantities.push_back(quantity);
    }
    return order;
}

}  // namespace shop

shop::OrderBook *book;

int main() {
    book = new shop::OrderBook;
    book->kept.reserve(300);
    for (int id = 0; id < 900; id++) {
        shop::Order *order = book->add(id);
        switch (id % 3) {
        case 0:
            book->kept.push_back(order);
            break;
        case 1:
            delete order;
            break;
        default:
            break;  // lost
        }
    }
    return 0;
}
