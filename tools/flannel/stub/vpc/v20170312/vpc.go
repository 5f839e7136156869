// Package v20170312 is weft's stand-in for the Tencent Cloud VPC client that
// flannel's tencent-vpc backend imports. Every call fails: the reference
// flanneld weft builds for testing never uses that backend.
package v20170312

import "errors"

var errStub = errors.New("tencent-vpc is not available in weft's reference flanneld build")

// Filter selects route tables.
type Filter struct {
	Name   *string
	Values []*string
}

// Route is a VPC route.
type Route struct {
	DestinationCidrBlock *string
	GatewayType          *string
	GatewayId            *string
	RouteType            *string
	RouteId              *uint64
	Enabled              *bool
}

// RouteTable is a VPC route table.
type RouteTable struct {
	RouteTableId *string
	RouteSet     []*Route
}

// DescribeRouteTablesRequest asks for route tables.
type DescribeRouteTablesRequest struct{ Filters []*Filter }

// DescribeRouteTablesResponse answers it.
type DescribeRouteTablesResponse struct {
	Response *struct{ RouteTableSet []*RouteTable }
}

// CreateRoutesRequest adds routes.
type CreateRoutesRequest struct {
	RouteTableId *string
	Routes       []*Route
}

// DeleteRoutesRequest removes routes.
type DeleteRoutesRequest struct {
	RouteTableId *string
	Routes       []*Route
}

// CreateRoutesResponse answers CreateRoutes.
type CreateRoutesResponse struct{}

// DeleteRoutesResponse answers DeleteRoutes.
type DeleteRoutesResponse struct{}

// Client is a VPC API client.
type Client struct{}

// NewClientWithSecretId returns a client whose calls all fail.
func NewClientWithSecretId(id, key, region string) (*Client, error) { return &Client{}, errStub }

func NewDescribeRouteTablesRequest() *DescribeRouteTablesRequest {
	return &DescribeRouteTablesRequest{}
}
func NewCreateRoutesRequest() *CreateRoutesRequest { return &CreateRoutesRequest{} }
func NewDeleteRoutesRequest() *DeleteRoutesRequest { return &DeleteRoutesRequest{} }

func (c *Client) DescribeRouteTables(*DescribeRouteTablesRequest) (*DescribeRouteTablesResponse, error) {
	return nil, errStub
}
func (c *Client) CreateRoutes(*CreateRoutesRequest) (*CreateRoutesResponse, error) {
	return nil, errStub
}
func (c *Client) DeleteRoutes(*DeleteRoutesRequest) (*DeleteRoutesResponse, error) {
	return nil, errStub
}
