/* A shared object for test_extremap: code, a read-only table spanning pages,
 * and writable data. */
#include <stdint.h>

#define TABLE_WORDS (3 * 4096 / 4 + 17)

const uint32_t extremap_probe_table[TABLE_WORDS] = {
#define W(i) (uint32_t)((i)*2654435761u)
    W(1), W(2), W(3), W(4), W(5), W(6), W(7), W(8),
};

int extremap_probe_counter = 40;

int extremap_probe_bump(void) { return ++extremap_probe_counter; }

uint32_t extremap_probe_sum(void) {
  uint32_t sum = 0;
  for (int i = 0; i < TABLE_WORDS; i++)
    sum += extremap_probe_table[i] * (uint32_t)(i + 1);
  return sum;
}
