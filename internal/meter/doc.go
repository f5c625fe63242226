// Package meter turns what the pool recorded into money (SPEC P4): the
// currency and its minor units, the price schedule in force at each
// instant, the split of a held interval into UTC hours at the prices in
// force, and the reports and monthly invoices made from those hours.
//
// Money is an integer count of the currency's minor units (cents, won);
// no float ever holds an amount. Time is metered to the millisecond: an
// interval [start, end) is cut at every UTC hour and at every price change
// inside it, and each piece is added to its hour at its price. A charge is
// rounded once, half up, where it is printed: per line of a report or an
// invoice (an item, a server, a price), and a total is the sum of its
// lines, so that a statement always adds up.
//
// Nothing here reads a clock or a database: the store records intervals
// and hours through Split, and the control plane renders them with Report
// and Invoice, which give the same bytes for the same input.
package meter
