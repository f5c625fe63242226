package controlplane

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"connectrpc.com/connect"

	"github.com/hac-project/hac/examples"
	hacv1 "github.com/hac-project/hac/gen/hac/v1"
)

// catalogService implements hacv1connect.CatalogServiceHandler.
type catalogService struct{}

func (catalogService) ListReferenceModels(context.Context, *connect.Request[hacv1.ListReferenceModelsRequest]) (*connect.Response[hacv1.ListReferenceModelsResponse], error) {
	out := &hacv1.ListReferenceModelsResponse{}
	for _, m := range examples.ReferenceModels() {
		out.Models = append(out.Models, &hacv1.ReferenceModel{Name: m.Name, Description: m.Description, Command: m.Command})
	}
	return connect.NewResponse(out), nil
}

func (catalogService) GetReferenceModel(_ context.Context, req *connect.Request[hacv1.GetReferenceModelRequest]) (*connect.Response[hacv1.GetReferenceModelResponse], error) {
	m, err := examples.LookupReference(req.Msg.Name)
	if err != nil {
		return nil, apiError(fmt.Errorf("%w: %v", ErrInvalid, err))
	}
	pm := &hacv1.ReferenceModel{Name: m.Name, Description: m.Description, Command: m.Command}
	for _, p := range slices.Sorted(maps.Keys(m.Files)) {
		pm.Files = append(pm.Files, &hacv1.ReferenceFile{Path: p, Data: m.Files[p]})
	}
	return connect.NewResponse(&hacv1.GetReferenceModelResponse{Model: pm}), nil
}
